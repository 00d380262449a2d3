//! What hooks decide, in one form whatever runs them (the C ABI in this process, a worker or a
//! program over the process protocol), and how their decisions apply to a request or a
//! response. The order in which hooks run is the router's and the server's business.

use crate::message::Response;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::time::Duration;

/// Which hooks an instance has: from its descriptor's non-NULL hook functions (ABI 1.1), or the
/// `hooks` a process lists when it starts (protocol 1.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookSet {
    /// `on_request`: sees every request before its route.
    pub on_request: bool,
    /// `on_response`: sees every response on its way out.
    pub on_response: bool,
    /// `on_connect`: may refuse a new connection.
    pub on_connect: bool,
    /// `on_disconnect`: told what a connection did once it closed.
    pub on_disconnect: bool,
}

impl HookSet {
    /// Whether the instance has any hook.
    pub fn any(&self) -> bool {
        self.on_request || self.on_response || self.on_connect || self.on_disconnect
    }

    /// The hooks' names, in the protocol's spelling (`on_request`, ...).
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.on_request, "on_request"),
            (self.on_response, "on_response"),
            (self.on_connect, "on_connect"),
            (self.on_disconnect, "on_disconnect"),
        ]
        .into_iter()
        .filter_map(|(has, name)| has.then_some(name))
        .collect()
    }
}

/// One change to a list of headers, as a hook asked for it. Names and values were checked when
/// the hook gave them (see [`checked_edit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderEdit {
    /// Appends a header.
    Add(HeaderName, HeaderValue),
    /// Replaces every header of the name with this one.
    Set(HeaderName, HeaderValue),
    /// Removes every header of the name.
    Remove(HeaderName),
}

impl HeaderEdit {
    /// Applies the change to `headers`; an error when they would be more than a header map
    /// holds.
    pub(crate) fn apply(self, headers: &mut HeaderMap) -> Result<(), TooManyHeaders> {
        match self {
            HeaderEdit::Add(name, value) => headers.try_append(name, value).map(drop),
            HeaderEdit::Set(name, value) => headers.try_insert(name, value).map(drop),
            HeaderEdit::Remove(name) => {
                headers.remove(name);
                Ok(())
            }
        }
        .map_err(|_| TooManyHeaders)
    }
}

/// Header changes that would make more headers than a message may have.
#[derive(Debug)]
pub(crate) struct TooManyHeaders;

impl std::fmt::Display for TooManyHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("its header changes make more headers than a message may have")
    }
}

/// Which list of headers an edit is for: the rules differ (a request's `host` is the client's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EditTarget {
    /// The request's headers, edited by `on_request`.
    Request,
    /// The response's headers, edited by `on_response`.
    Response,
}

/// Checks a header change a hook asks for (`value` is ignored for a removal). `None` if it is
/// refused: a name that is not an HTTP token, a value with control characters other than tab,
/// or a header that frames the message (for a request, also `host`, which the client sent).
pub(crate) fn checked_edit(
    target: EditTarget,
    kind: EditKind,
    name: &[u8],
    value: &[u8],
) -> Option<HeaderEdit> {
    let name = HeaderName::from_bytes(name).ok()?;
    if crate::message::FRAMING_HEADERS.contains(&name)
        || (target == EditTarget::Request && name == http::header::HOST)
    {
        return None;
    }
    let value = || HeaderValue::from_bytes(value).ok();
    Some(match kind {
        EditKind::Add => HeaderEdit::Add(name, value()?),
        EditKind::Set => HeaderEdit::Set(name, value()?),
        EditKind::Remove => HeaderEdit::Remove(name),
    })
}

/// The three header changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EditKind {
    /// Append.
    Add,
    /// Replace all of the name.
    Set,
    /// Remove all of the name.
    Remove,
}

/// What an `on_request` hook decided.
#[derive(Debug)]
pub(crate) enum RequestVerdict {
    /// Go on to the next hook and the route, with these changes to the request's headers.
    Continue(Vec<HeaderEdit>),
    /// Answer now with this response: no later `on_request` hook, and no route. (Boxed: the
    /// rare case should not make every verdict the size of a response.)
    Respond(Box<Response>),
}

/// What an `on_response` hook changes in the response.
#[derive(Debug, Default)]
pub(crate) struct ResponseEdit {
    /// The new status.
    pub(crate) status: Option<u16>,
    /// Changes to the headers, in order.
    pub(crate) headers: Vec<HeaderEdit>,
    /// The new body, replacing the old one whole.
    pub(crate) body: Option<Vec<u8>>,
}

impl ResponseEdit {
    /// Applies the changes to `response`.
    pub(crate) fn apply(self, response: &mut Response) -> Result<(), TooManyHeaders> {
        if let Some(status) = self.status {
            response.status = status;
        }
        for edit in self.headers {
            edit.apply(&mut response.headers)?;
        }
        if let Some(body) = self.body {
            response.body = body;
        }
        Ok(())
    }
}

/// What an `on_connect` hook decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnectVerdict {
    /// Serve the connection.
    Accept,
    /// Close it; the reason the plugin gave, for the log.
    Refuse(Option<String>),
}

/// A client's connection: the addresses hooks see, written `IP:PORT`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connection {
    /// The client's address.
    pub client: String,
    /// The host's address the client connected to.
    pub local: String,
}

/// What a closed connection did, for `on_disconnect`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Its addresses.
    pub connection: Connection,
    /// The requests received on it.
    pub requests: u64,
    /// The bytes read from the client.
    pub bytes_in: u64,
    /// The bytes written to the client.
    pub bytes_out: u64,
    /// How long it was open.
    pub duration: Duration,
}

/// The paths a plugin's request and response hooks see, from its `hook_paths`: route patterns
/// (`/api/{*rest}`, `/admin`), matched as routes are.
#[derive(Debug)]
pub(crate) struct HookScope {
    matcher: matchit::Router<()>,
}

impl HookScope {
    /// A scope of `patterns`, or why one is not a pattern.
    pub(crate) fn new(patterns: &[String]) -> Result<Self, String> {
        let mut matcher = matchit::Router::new();
        for pattern in patterns {
            if !pattern.starts_with('/') {
                return Err(format!("the hook path `{pattern}` does not start with `/`"));
            }
            matcher
                .insert(pattern.as_str(), ())
                .map_err(|e| format!("the hook path `{pattern}` is not a valid pattern: {e}"))?;
        }
        Ok(Self { matcher })
    }

    /// Whether a request for `path` (normalized) is in the scope.
    pub(crate) fn sees(&self, path: &str) -> bool {
        self.matcher.at(path).is_ok()
    }
}

/// What a client reads about a panic during `call` (a route, `GET /x`, or a hook, as
/// [`hook_call`] names it).
pub(crate) fn panicked(call: &str) -> String {
    match call.strip_suffix(HOOK_SUFFIX) {
        Some(_) => format!("{call} panicked"),
        None => format!("the handler panicked during {call}"),
    }
}

const HOOK_SUFFIX: &str = " hook";

/// How errors name a call of the hook `name`: `its on_request hook`.
pub(crate) fn hook_call(name: &str) -> String {
    format!("its {name}{HOOK_SUFFIX}")
}
