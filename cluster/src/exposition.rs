//! The two text formats of Prometheus metrics, and choosing between them by the scraper's
//! `Accept` header.
//!
//! `prometheus-client` writes OpenMetrics 1.0: a counter family `x` is typed as `x` with
//! samples `x_total`, units have `# UNIT` lines, and the text ends with `# EOF`. Served as
//! `text/plain; version=0.0.4` (as it once was), Prometheus parses it with the older
//! format's rules and sees `x_total` as a sample of no declared family: every counter
//! becomes untyped. So OpenMetrics goes out only as `application/openmetrics-text` to a
//! scraper that asks for it (Prometheus does), and everyone else gets the same samples in
//! the 0.0.4 text format, where the family is named after its samples (`x_total`).

/// OpenMetrics 1.0's content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format's content type.
pub const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The content type and body to answer a scrape whose `Accept` header is `accept`, given
/// the metrics in OpenMetrics text.
pub fn negotiate(accept: Option<&str>, openmetrics: String) -> (&'static str, String) {
    if accepts_openmetrics(accept.unwrap_or_default()) {
        (OPENMETRICS, openmetrics)
    } else {
        (TEXT, to_text_format(&openmetrics))
    }
}

/// Whether an `Accept` header lists `application/openmetrics-text` without `q=0`.
fn accepts_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut params = range.split(';').map(str::trim);
        let media = params.next().unwrap_or_default();
        let refused = params.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
    })
}

/// OpenMetrics text as the 0.0.4 text format: counter families renamed to their `_total`
/// samples, info families to gauges of their `_info` samples, unknown to untyped, and no
/// `# UNIT` or `# EOF` lines. Samples are unchanged.
pub fn to_text_format(openmetrics: &str) -> String {
    let types: std::collections::HashMap<&str, &str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .collect();
    let renamed = |family: &str| -> (String, Option<&'static str>) {
        match types.get(family).copied() {
            Some("counter") => (format!("{family}_total"), Some("counter")),
            Some("info") => (format!("{family}_info"), Some("gauge")),
            Some("unknown") => (family.to_owned(), Some("untyped")),
            _ => (family.to_owned(), None),
        }
    };
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (family, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str(&format!("# HELP {} {help}\n", renamed(family).0));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let (name, new_kind) = renamed(family);
            out.push_str(&format!("# TYPE {name} {}\n", new_kind.unwrap_or(kind)));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS_TEXT: &str = "\
# HELP requests Requests served.
# TYPE requests counter
requests_total{route=\"/v1/nodes\"} 3
# HELP memory_bytes Resident memory.
# TYPE memory_bytes gauge
# UNIT memory_bytes bytes
memory_bytes 1024
# HELP build Build information.
# TYPE build info
build_info{version=\"1.2.3\"} 1
# EOF
";

    #[test]
    fn prometheus_asks_for_openmetrics_and_others_get_the_text_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let (kind, body) = negotiate(Some(prometheus), OPENMETRICS_TEXT.to_owned());
        assert_eq!((kind, body.as_str()), (OPENMETRICS, OPENMETRICS_TEXT));
        for accept in [
            None,
            Some("*/*"),
            Some("text/plain"),
            Some("application/openmetrics-text;q=0"),
        ] {
            let (kind, body) = negotiate(accept, OPENMETRICS_TEXT.to_owned());
            assert_eq!(kind, TEXT, "{accept:?}");
            assert!(
                !body.contains("# EOF") && !body.contains("# UNIT"),
                "{body}"
            );
        }
    }

    #[test]
    fn counters_are_named_after_their_samples_in_the_text_format() {
        let text = to_text_format(OPENMETRICS_TEXT);
        assert_eq!(
            text,
            "\
# HELP requests_total Requests served.
# TYPE requests_total counter
requests_total{route=\"/v1/nodes\"} 3
# HELP memory_bytes Resident memory.
# TYPE memory_bytes gauge
memory_bytes 1024
# HELP build_info Build information.
# TYPE build_info gauge
build_info{version=\"1.2.3\"} 1
"
        );
    }
}
