//! `since=`: where a range of the audit log or of metric history starts.

use time::OffsetDateTime;

/// An RFC 3339 time, or a span such as `90m` or `7d` back from `now`.
pub fn parse(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(at);
    }
    cloudos_cluster::token::parse_ttl(text)
        .map(|span| now - span)
        .map_err(|_| {
            format!("since: {text:?} is neither an RFC 3339 time nor a span such as 1h or 7d")
        })
}
