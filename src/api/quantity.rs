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

/// Parses a Kubernetes quantity (`"3900m"`, `"4"`, `"16374564Ki"`, `"1e3"`, `"1.5Gi"`) into
/// its value × 10⁹, rounded up as `Quantity.ScaledValue(Nano)`: CPU nanocores. `None` for
/// anything that is not a non-negative quantity.
pub fn parse_nanos(q: &str) -> Option<u64> {
    let v = parse(q)?;
    let n = (v * 1e9).ceil();
    (n.is_finite() && n <= u64::MAX as f64).then_some(n as u64)
}

/// Parses a Kubernetes quantity into whole units, rounded up as `Quantity.Value()`: bytes.
pub fn parse_units(q: &str) -> Option<u64> {
    let v = parse(q)?;
    let n = v.ceil();
    (n.is_finite() && n <= u64::MAX as f64).then_some(n as u64)
}

fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    let v = number * scale;
    (v >= 0.0).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_nanos("3900m"), Some(3_900_000_000));
        assert_eq!(parse_nanos("4"), Some(4_000_000_000));
        assert_eq!(parse_nanos("250u"), Some(250_000));
        assert_eq!(parse_units("16374564Ki"), Some(16_374_564 * 1024));
        assert_eq!(parse_units("1.5Gi"), Some(1_610_612_736));
        assert_eq!(parse_units("1e3"), Some(1000));
        assert_eq!(parse_units("128974848"), Some(128_974_848));
        for bad in ["", "x", "12Q", "-1", "1..2"] {
            assert_eq!(parse_units(bad), None, "{bad}");
        }
    }

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
