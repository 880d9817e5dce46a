//! Kubernetes quantities compared by value.
//!
//! The API server stores quantities in a canonical form (`1000m` comes back as `1`, `1024Mi`
//! as `1Gi`), so comparing the strings Muster sent with the strings it reads back would see
//! drift where there is none and re-apply forever.

/// The value of `s` in billionths (`1m` = 1,000,000), or `None` when `s` is not a quantity or
/// is out of range.
pub fn nano_units(s: &str) -> Option<i128> {
    let s = s.trim();
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, suffix) = s.split_at(end);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    // Decimal exponent and binary multiplier of the suffix.
    let (exp10, binary): (i32, i128) = match suffix {
        "" => (0, 1),
        "n" => (-9, 1),
        "u" => (-6, 1),
        "m" => (-3, 1),
        "k" => (3, 1),
        "M" => (6, 1),
        "G" => (9, 1),
        "T" => (12, 1),
        "P" => (15, 1),
        "E" => (18, 1),
        "Ki" => (0, 1 << 10),
        "Mi" => (0, 1 << 20),
        "Gi" => (0, 1 << 30),
        "Ti" => (0, 1 << 40),
        "Pi" => (0, 1 << 50),
        "Ei" => (0, 1 << 60),
        other => {
            let exp = other.strip_prefix(['e', 'E'])?;
            (exp.parse::<i32>().ok().filter(|e| e.abs() <= 18)?, 1)
        }
    };
    // mantissa = int.frac as an integer, scaled by 10^-len(frac).
    let digits = format!("{int}{frac}");
    if digits.len() > 30 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mantissa: i128 = digits.parse().ok()?;
    let scale = exp10 + 9 - i32::try_from(frac.len()).ok()?;
    let value = if scale >= 0 {
        mantissa.checked_mul(10i128.checked_pow(scale.unsigned_abs())?)?
    } else {
        // Below a billionth: Kubernetes rounds up; so do we.
        let div = 10i128.checked_pow(scale.unsigned_abs())?;
        (mantissa + div - 1) / div
    };
    let value = value.checked_mul(binary)?;
    Some(if negative { -value } else { value })
}

/// Whether two quantity strings mean the same amount (the same string always does).
pub fn same(a: &str, b: &str) -> bool {
    a == b || matches!((nano_units(a), nano_units(b)), (Some(x), Some(y)) if x == y)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_amounts_in_other_notations_are_the_same() {
        assert!(same("1000m", "1"));
        assert!(same("1024Mi", "1Gi"));
        assert!(same("1.5", "1500m"));
        assert!(same("1e3", "1k"));
        assert!(same("0.5Gi", "512Mi"));
        assert!(same("+2", "2"));
    }

    #[test]
    fn different_amounts_and_non_quantities_differ() {
        assert!(!same("1", "2"));
        assert!(!same("1Gi", "1G"));
        assert!(!same("lots", "1"));
        assert!(!same("", "0"));
        assert_eq!(nano_units("500m"), Some(500_000_000));
        assert_eq!(nano_units("1Ki"), Some(1024 * 1_000_000_000));
        assert_eq!(nano_units("x1"), None);
        assert_eq!(nano_units("1e99"), None);
    }
}
