pub mod natsd;

pub fn x(){}
