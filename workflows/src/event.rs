//! CloudEvent helpers: reading data as JSON and deriving keys.

use cloudevents::{AttributesReader, Data, Event};

/// The event's data as JSON: JSON data as is, text or bytes parsed as JSON, `Null` when absent.
///
/// # Errors
/// When the data is text or bytes that do not parse as JSON.
pub fn data_json(event: &Event) -> Result<serde_json::Value, serde_json::Error> {
    match event.data() {
        None => Ok(serde_json::Value::Null),
        Some(Data::Json(value)) => Ok(value.clone()),
        Some(Data::String(text)) => serde_json::from_str(text),
        Some(Data::Binary(bytes)) => serde_json::from_slice(bytes),
    }
}

/// The CloudEvent `subject` made into one NATS subject token: characters that NATS treats as
/// separators or wildcards (`.`, `*`, `>`, whitespace) become `_`; absent or empty gives `_`.
pub fn subject_token(subject: Option<&str>) -> String {
    match subject {
        None | Some("") => "_".to_owned(),
        Some(subject) => subject
            .chars()
            .map(|c| match c {
                '.' | '*' | '>' => '_',
                c if c.is_whitespace() || c.is_control() => '_',
                c => c,
            })
            .collect(),
    }
}

/// Whether `text` is dot-separated NATS subject tokens without wildcards or whitespace.
pub fn is_token_path(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').all(|token| {
            !token.is_empty()
                && token
                    .chars()
                    .all(|c| !c.is_whitespace() && !c.is_control() && c != '*' && c != '>')
        })
}

/// The key of an event when a workflow does not choose one: its subject token.
pub fn default_key(event: &Event) -> String {
    subject_token(event.subject())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudevents::{EventBuilder, EventBuilderV10};

    #[test]
    fn subject_tokens_are_single_nats_tokens() {
        assert_eq!(subject_token(None), "_");
        assert_eq!(subject_token(Some("")), "_");
        assert_eq!(subject_token(Some("payments")), "payments");
        assert_eq!(subject_token(Some("a.b*c> d")), "a_b_c__d");
    }

    #[test]
    fn data_json_reads_every_data_variant() {
        let event = EventBuilderV10::new()
            .id("1")
            .source("/t")
            .ty("t")
            .data("application/json", serde_json::json!({"a": 1}))
            .build()
            .unwrap();
        assert_eq!(data_json(&event).unwrap(), serde_json::json!({"a": 1}));
        let event = EventBuilderV10::new()
            .id("1")
            .source("/t")
            .ty("t")
            .data("text/plain", "[1,2]".to_owned())
            .build()
            .unwrap();
        assert_eq!(data_json(&event).unwrap(), serde_json::json!([1, 2]));
        let event = EventBuilderV10::new().id("1").source("/t").ty("t").build().unwrap();
        assert_eq!(data_json(&event).unwrap(), serde_json::Value::Null);
    }
}
