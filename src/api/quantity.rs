//! Canonical Kubernetes quantity strings, as `resource.Quantity.String()` prints
//! them: CPU from nanocores in decimal SI (`"1539931n"`, `"120m"`, `"2"`), memory
//! from bytes in binary SI (`"4620Ki"`, `"1536Mi"`, or plain bytes).

/// CPU nanocores as a canonical decimal-SI quantity.
pub fn cpu_nanocores(n: u64) -> String {
    if n == 0 {
        return "0".into();
    }
    const SUFFIXES: [&str; 7] = ["n", "u", "m", "", "k", "M", "G"];
    let mut value = n;
    let mut i = 0;
    while i + 1 < SUFFIXES.len() && value.is_multiple_of(1000) {
        value /= 1000;
        i += 1;
    }
    format!("{value}{}", SUFFIXES[i])
}

/// Memory bytes as a canonical binary-SI quantity.
pub fn memory_bytes(b: u64) -> String {
    if b == 0 {
        return "0".into();
    }
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let mut value = b;
    let mut i = 0;
    while i + 1 < SUFFIXES.len() && value.is_multiple_of(1024) {
        value /= 1024;
        i += 1;
    }
    format!("{value}{}", SUFFIXES[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_canonical() {
        assert_eq!(cpu_nanocores(0), "0");
        assert_eq!(cpu_nanocores(1_539_931), "1539931n");
        assert_eq!(cpu_nanocores(120_000_000), "120m");
        assert_eq!(cpu_nanocores(2_000_000_000), "2");
        assert_eq!(cpu_nanocores(1_500), "1500n");
        assert_eq!(cpu_nanocores(5_000), "5u");
        assert_eq!(cpu_nanocores(2_000_000_000_000), "2k");
    }

    #[test]
    fn memory_is_canonical() {
        assert_eq!(memory_bytes(0), "0");
        assert_eq!(memory_bytes(4620 * 1024), "4620Ki");
        assert_eq!(memory_bytes(1536 * 1024 * 1024), "1536Mi");
        assert_eq!(memory_bytes(12_533_761), "12533761");
        assert_eq!(memory_bytes(2 * 1024 * 1024 * 1024), "2Gi");
    }

    proptest::proptest! {
        #[test]
        fn quantities_parse_back_to_the_same_value(n in 0u64..u64::MAX / 2) {
            let s = cpu_nanocores(n);
            let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
            let mult: u64 = match &s[digits.len()..] { "n" => 1, "u" => 1_000, "m" => 1_000_000, "" => 1_000_000_000, "k" => 1_000_000_000_000, "M" => 1_000_000_000_000_000, "G" => 1_000_000_000_000_000_000, other => panic!("suffix {other}") };
            proptest::prop_assert_eq!(digits.parse::<u128>().unwrap() * mult as u128, n as u128);
            let s = memory_bytes(n);
            let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
            let shift = match &s[digits.len()..] { "" => 0, "Ki" => 10, "Mi" => 20, "Gi" => 30, "Ti" => 40, "Pi" => 50, "Ei" => 60, other => panic!("suffix {other}") };
            proptest::prop_assert_eq!(digits.parse::<u128>().unwrap() << shift, n as u128);
        }
    }
}
