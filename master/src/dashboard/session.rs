//! Browser sessions: a random id in a cookie (`HttpOnly`, `Secure`, `SameSite=Strict`),
//! a CSRF token per session that every change must carry in a header, and one-time
//! login links that `cloudos dashboard` opens.
//!
//! Sessions live in the leader's memory, keyed by the SHA-256 of their id (a copy of the
//! table leaks no usable cookie). A leader change or a restart logs browsers out: a
//! person logs in again, which costs seconds; storing sessions in the cluster's store
//! would make every page view a write. A session ends at logout, after [`IDLE`] unused,
//! after [`LIFETIME`], and at once when its user is removed (the caller layer reads the
//! user's record on every request).

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{header, HeaderMap};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};

/// The cookie's name.
pub const COOKIE: &str = "cloudos_session";
/// The header a change made with a session cookie must carry, holding the session's CSRF
/// token (pages put it in `<meta name="csrf-token">`).
pub const CSRF_HEADER: &str = "x-cloudos-csrf";
/// A session unused this long ends.
pub const IDLE: Duration = Duration::hours(8);
/// A session ends this long after login whatever happens.
pub const LIFETIME: Duration = Duration::days(7);
/// How long a one-time login link is good for.
pub const LINK_TTL: Duration = Duration::seconds(120);

#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub csrf: String,
    created: OffsetDateTime,
    last_used: OffsetDateTime,
}

#[derive(Debug, Default)]
pub struct Sessions {
    /// By the hex SHA-256 of the cookie's value.
    live: Mutex<HashMap<String, Session>>,
    /// One-time links: hash of the link's token → (user, until).
    links: Mutex<HashMap<String, (String, OffsetDateTime)>>,
}

/// 256 random bits as URL-safe text.
fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(cloudos_cluster::to_hex(&bytes))
}

fn digest(token: &str) -> String {
    cloudos_cluster::to_hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

impl Sessions {
    /// A new session for `user`: the cookie's value to send, once.
    pub fn open(&self, user: &str, now: OffsetDateTime) -> Option<String> {
        let id = random_token()?;
        let session = Session {
            user: user.to_owned(),
            csrf: random_token()?,
            created: now,
            last_used: now,
        };
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|_, s| alive(s, now));
        live.insert(digest(&id), session);
        Some(id)
    }

    /// The session a cookie value names, if it is alive; marks it used.
    pub fn get(&self, id: &str, now: OffsetDateTime) -> Option<Session> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let key = digest(id);
        let session = live.get_mut(&key)?;
        if !alive(session, now) {
            live.remove(&key);
            return None;
        }
        session.last_used = now;
        Some(session.clone())
    }

    /// Ends the session a cookie value names.
    pub fn close(&self, id: &str) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.remove(&digest(id));
    }

    /// Ends every session of `user` (removed, or their password changed).
    pub fn close_user(&self, user: &str) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|_, s| s.user != user);
    }

    /// A one-time login link's token for `user`.
    pub fn link(&self, user: &str, now: OffsetDateTime) -> Option<String> {
        let token = random_token()?;
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        links.retain(|_, (_, until)| *until > now);
        links.insert(digest(&token), (user.to_owned(), now + LINK_TTL));
        Some(token)
    }

    /// Uses a link's token: its user, once, while it is valid.
    pub fn use_link(&self, token: &str, now: OffsetDateTime) -> Option<String> {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        let (user, until) = links.remove(&digest(token))?;
        (until > now).then_some(user)
    }
}

fn alive(s: &Session, now: OffsetDateTime) -> bool {
    now - s.last_used < IDLE && now - s.created < LIFETIME
}

/// The value of the session cookie in `headers`, if any.
pub fn cookie(headers: &HeaderMap) -> Option<&str> {
    cookie_named(headers, COOKIE)
}

fn cookie_named<'a>(headers: &'a HeaderMap, wanted: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == wanted)
        .map(|(_, value)| value)
}

/// The `Set-Cookie` value that gives the browser session `id`.
pub fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        LIFETIME.whole_seconds()
    )
}

/// The login form's cookie: a random token the form carries too (double submit), so a
/// login can only come from this master's own login page.
pub const LOGIN_COOKIE: &str = "cloudos_login";

/// A fresh token for a login form.
pub fn login_token() -> Option<String> {
    random_token()
}

/// The `Set-Cookie` value for a login form's token (ten minutes to fill the form in).
pub fn set_login_cookie(token: &str) -> String {
    format!(
        "{LOGIN_COOKIE}={token}; Path=/ui/login; HttpOnly; Secure; SameSite=Strict; Max-Age=600"
    )
}

/// The login form's token from the request's cookies.
pub fn login_cookie(headers: &HeaderMap) -> Option<&str> {
    cookie_named(headers, LOGIN_COOKIE)
}

/// The `Set-Cookie` value that makes the browser forget its session.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

/// Whether the request carries the session's CSRF token (compared in constant time).
pub fn csrf_ok(headers: &HeaderMap, session: &Session) -> bool {
    headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|given| same_secret(given, &session.csrf))
}

/// Whether two secrets are equal, compared in constant time.
pub fn same_secret(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-07 12:00 UTC);

    #[test]
    fn a_session_ends_when_idle_too_long_at_its_lifetime_and_at_logout() {
        let sessions = Sessions::default();
        let id = sessions.open("alice", NOW).expect("open");
        assert_eq!(
            sessions.get(&id, NOW).map(|s| s.user).as_deref(),
            Some("alice")
        );
        assert!(sessions.get("not-a-session", NOW).is_none());
        // Used every hour, it lives until its lifetime.
        let mut t = NOW;
        while t < NOW + LIFETIME - Duration::hours(1) {
            t += Duration::hours(1);
            assert!(sessions.get(&id, t).is_some(), "{t}");
        }
        assert!(sessions.get(&id, NOW + LIFETIME).is_none());
        let idle = sessions.open("alice", NOW).expect("open");
        assert!(sessions.get(&idle, NOW + IDLE).is_none());
        let closed = sessions.open("bob", NOW).expect("open");
        sessions.close(&closed);
        assert!(sessions.get(&closed, NOW).is_none());
        let removed = sessions.open("carol", NOW).expect("open");
        sessions.close_user("carol");
        assert!(sessions.get(&removed, NOW).is_none());
    }

    #[test]
    fn a_link_works_once_and_not_after_its_time() {
        let sessions = Sessions::default();
        let link = sessions.link("alice", NOW).expect("link");
        assert_eq!(sessions.use_link(&link, NOW).as_deref(), Some("alice"));
        assert_eq!(sessions.use_link(&link, NOW), None);
        let late = sessions.link("alice", NOW).expect("link");
        assert_eq!(sessions.use_link(&late, NOW + LINK_TTL), None);
    }

    #[test]
    fn the_cookie_is_found_among_others_and_csrf_must_match() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; cloudos_session=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie(&headers), Some("abc"));
        let session = Session {
            user: "alice".into(),
            csrf: "token".into(),
            created: NOW,
            last_used: NOW,
        };
        assert!(!csrf_ok(&headers, &session));
        headers.insert(CSRF_HEADER, "tokem".parse().unwrap());
        assert!(!csrf_ok(&headers, &session));
        headers.insert(CSRF_HEADER, "token".parse().unwrap());
        assert!(csrf_ok(&headers, &session));
        let set = set_cookie("abc");
        for attribute in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
            assert!(set.contains(attribute), "{set}");
        }
    }
}
