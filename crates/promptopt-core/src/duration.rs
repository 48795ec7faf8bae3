//! Durations as people write them in requests and on the command line.

use std::time::Duration;

/// Parses a duration such as `90` (seconds), `90s`, `30m`, `2h`, `1d` or `1h30m`; the error says
/// what is wrong with the text.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = |message: &str| format!("`{text}` {message} (use e.g. `90s`, `30m`, `2h`)");
    let t = text.trim();
    if t.is_empty() {
        return Err(invalid("is empty"));
    }
    if let Ok(seconds) = t.parse::<f64>() {
        if seconds.is_finite() && seconds > 0.0 {
            return Duration::try_from_secs_f64(seconds).map_err(|_| invalid("is too long"));
        }
        return Err(invalid("is not a positive duration"));
    }
    let mut total = 0.0;
    let mut number = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            _ => return Err(invalid("has an unknown unit")),
        };
        let value: f64 = number
            .parse()
            .map_err(|_| invalid("has a unit without a number"))?;
        total += value * unit;
        number.clear();
    }
    if !number.is_empty() {
        return Err(invalid("ends with a number without a unit"));
    }
    if !(total.is_finite() && total > 0.0) {
        return Err(invalid("is not a positive duration"));
    }
    Duration::try_from_secs_f64(total).map_err(|_| invalid("is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_bad_ones_say_why() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("5x").is_err_and(|e| e.contains("unknown unit")));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("1e300").is_err_and(|e| e.contains("too long")));
    }
}
