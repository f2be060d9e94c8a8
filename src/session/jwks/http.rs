//! The provider's URLs and fetch errors: checked, redacted for messages,
//! and followed through redirects only on the same scheme.

/// Redirects followed per fetch.
const MAX_REDIRECTS: usize = 5;

pub(super) fn parse_http_url(s: &str, what: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(s).map_err(|e| format!("{what} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("{what} must be an http:// or https:// URL"));
    }
    Ok(url)
}

/// A URL for messages: no credentials, query or fragment.
pub(super) fn display_url(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// A fetch error without its URL (messages name the URL once, redacted).
pub(super) fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".into();
    }
    let e = e.without_url();
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// Follows a few redirects, never to another scheme (no silent downgrade
/// from https to http).
pub(super) fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let too_many = attempt.previous().len() > MAX_REDIRECTS;
        let same_scheme = attempt
            .previous()
            .last()
            .is_some_and(|from| from.scheme() == attempt.url().scheme());
        if too_many {
            attempt.error("too many redirects")
        } else if !same_scheme {
            attempt.error("redirect to another scheme")
        } else {
            attempt.follow()
        }
    })
}
