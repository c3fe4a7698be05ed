//! Reading tapwire's own log: the `stopped` line's counters, in either log
//! encoding (JSON lines off a terminal, which is how the bench runs it, or
//! console lines with `--log-encoding console`).

use serde_json::Value;

/// The counters of the last `stopped` line in `lines`, if any.
pub fn stopped_counters(lines: &[String]) -> Option<Value> {
    lines.iter().rev().find_map(|line| counters_of(line))
}

/// The counters of one `stopped` line.
fn counters_of(line: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(line) {
        if v["message"] != "stopped" {
            return None;
        }
        // Display-formatted fields are JSON strings holding the JSON text.
        return match &v["counters"] {
            Value::String(text) => serde_json::from_str(text).ok(),
            Value::Object(_) => Some(v["counters"].clone()),
            _ => None,
        };
    }
    let (_, json) = line.split_once(" stopped counters=")?;
    serde_json::from_str(json.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_both_encodings() {
        let json = r#"{"timestamp":"2026-11-30T07:00:00Z","level":"INFO","message":"stopped","counters":"{\"late_files\":{\"live_window\":{\"files\":3,\"p50_us\":900}}}","target":"tapwire::agent"}"#;
        let console = r#"2026-11-30T07:00:00Z  INFO tapwire::agent: stopped counters={"late_files":{"live_window":{"files":2}}}"#;
        let other = r#"{"level":"INFO","message":"capture ready","readers":2}"#;
        let lines: Vec<String> = [json, other].map(String::from).to_vec();
        let c = stopped_counters(&lines).expect("json counters");
        assert_eq!(c["late_files"]["live_window"]["p50_us"], 900);
        let lines = vec![console.to_owned(), other.to_owned()];
        let c = stopped_counters(&lines).expect("console counters");
        assert_eq!(c["late_files"]["live_window"]["files"], 2);
        assert_eq!(stopped_counters(&[other.to_owned()]), None);
    }
}
