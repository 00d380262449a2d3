//! The host's view of a request and the response a handler builds.

use crate::ffi::Headers;

/// A request to dispatch: borrowed parts, so that an HTTP server can pass its own buffers
/// without copying them.
#[derive(Debug, Clone, Default)]
pub struct Request<'a> {
    pub(crate) method: &'a str,
    pub(crate) path: &'a str,
    pub(crate) query: &'a str,
    pub(crate) headers: Headers<'a>,
    pub(crate) body: &'a [u8],
    /// The connection it came on, if it came through a socket.
    pub(crate) connection: Option<&'a crate::Connection>,
}

impl<'a> Request<'a> {
    /// A request for `method` (upper-case) and `target`, a path with an optional `?query`.
    pub fn new(method: &'a str, target: &'a str) -> Self {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Self {
            method,
            path,
            query,
            ..Self::default()
        }
    }

    /// Adds a header (HTTP servers pass names in lower case).
    pub fn header(mut self, name: &'a str, value: &'a [u8]) -> Self {
        self.headers.push(name, value);
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: &'a [u8]) -> Self {
        self.body = body;
        self
    }

    /// Sets the connection the request came on, which hooks see.
    pub fn connection(mut self, connection: &'a crate::Connection) -> Self {
        self.connection = Some(connection);
        self
    }

    /// This request with other headers.
    pub(crate) fn with_headers<'b>(&self, headers: &'b http::HeaderMap) -> Request<'b>
    where
        'a: 'b,
    {
        let mut request = Request {
            method: self.method,
            path: self.path,
            query: self.query,
            headers: Headers::default(),
            body: self.body,
            connection: self.connection,
        };
        request.headers.reserve(headers.len());
        for (name, value) in headers {
            request.headers.push(name.as_str(), value.as_bytes());
        }
        request
    }

    /// The headers as a map, to change (the ones that are not valid HTTP are left out).
    pub(crate) fn header_map(&self) -> http::HeaderMap {
        self.headers
            .iter()
            .filter_map(|(name, value)| {
                Some((
                    http::HeaderName::from_bytes(name.as_bytes()).ok()?,
                    http::HeaderValue::from_bytes(value).ok()?,
                ))
            })
            .collect()
    }

    /// The method.
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The path, without the query.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The query string, without `?`.
    pub fn query(&self) -> &'a str {
        self.query
    }
}

/// The response a handler wrote. Headers are kept as the `http` crate's types, validated when
/// the plugin adds them, so that an HTTP server sends them without another conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status; 200 unless the handler set another.
    pub status: u16,
    /// The headers the handler added.
    pub headers: http::HeaderMap,
    /// The body.
    pub body: Vec<u8>,
    /// What failed, when this is the host's answer about a plugin's failed call (see
    /// `server::plugin_error`): the metrics count it, and neither the client nor a hook sees it.
    pub(crate) failure: Option<crate::metrics::Failure>,
}

impl Default for Response {
    fn default() -> Self {
        Self {
            status: 200,
            headers: http::HeaderMap::new(),
            body: Vec::new(),
            failure: None,
        }
    }
}

impl Response {
    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name).map(http::HeaderValue::as_bytes)
    }
}

/// Headers that frame the HTTP message: the host's server sets them from the real body, and a
/// plugin's would desynchronise the connection.
pub(crate) const FRAMING_HEADERS: [http::HeaderName; 6] = [
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
    http::header::CONNECTION,
    http::header::UPGRADE,
    http::header::TE,
    http::header::TRAILER,
];

/// A response header a plugin may set: a valid name that does not frame the message, and a
/// valid value. `None` if it is refused.
pub(crate) fn checked_header(
    name: &[u8],
    value: &[u8],
) -> Option<(http::HeaderName, http::HeaderValue)> {
    let name = http::HeaderName::from_bytes(name)
        .ok()
        .filter(|n| !FRAMING_HEADERS.contains(n))?;
    Some((name, http::HeaderValue::from_bytes(value).ok()?))
}
