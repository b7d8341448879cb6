//! Server addresses as people type them: `HOST:PORT`, with IPv6 hosts in brackets.
//!
//! The address is also the key under which a server's fingerprint and the session are
//! stored in the profile, so it has one canonical text form (host lower-cased). This
//! module only parses; it must not resolve names or open connections.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A server's host name or IP address and TCP port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServerAddress {
    host: String,
    port: u16,
}

/// Why text is not a server address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid server address {input:?}: {reason} (expected HOST:PORT, e.g. 127.0.0.1:5555)")]
pub struct AddressError {
    input: String,
    reason: &'static str,
}

impl ServerAddress {
    /// An address from its parts. The host is lower-cased (host names are
    /// case-insensitive) and must not be empty.
    ///
    /// # Errors
    /// An [`AddressError`] if the host is empty or contains whitespace.
    pub fn new(host: &str, port: u16) -> Result<ServerAddress, AddressError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let error = |reason| AddressError {
            input: format!("{host}:{port}"),
            reason,
        };
        if host.is_empty() {
            return Err(error("the host is empty"));
        }
        if host.chars().any(|ch| ch.is_whitespace() || ch == '/') {
            return Err(error("the host contains a space or '/'"));
        }
        Ok(ServerAddress {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// The host name or IP address, without brackets.
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl FromStr for ServerAddress {
    type Err = AddressError;

    fn from_str(raw: &str) -> Result<ServerAddress, AddressError> {
        let input = raw.trim();
        let error = |reason| AddressError {
            input: input.to_owned(),
            reason,
        };
        let (host, port) = if let Some(rest) = input.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| error("missing ']' after an IPv6 address"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| error("missing :PORT"))?;
            (host, port)
        } else {
            let (host, port) = input
                .rsplit_once(':')
                .ok_or_else(|| error("missing :PORT"))?;
            if host.contains(':') {
                return Err(error("put an IPv6 address in brackets, e.g. [::1]:5555"));
            }
            (host, port)
        };
        let port: u16 = port
            .parse()
            .map_err(|_| error("the port is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(error("the port is not a number from 1 to 65535"));
        }
        ServerAddress::new(host, port).map_err(|err| AddressError {
            input: input.to_owned(),
            reason: err.reason,
        })
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl TryFrom<String> for ServerAddress {
    type Error = AddressError;
    fn try_from(raw: String) -> Result<ServerAddress, AddressError> {
        raw.parse()
    }
}

impl From<ServerAddress> for String {
    fn from(address: ServerAddress) -> String {
        address.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_canonically() {
        let address: ServerAddress = "Chat.Example.ORG:5555".parse().unwrap();
        assert_eq!(address.host(), "chat.example.org");
        assert_eq!(address.port(), 5555);
        assert_eq!(address.to_string(), "chat.example.org:5555");
        let v6: ServerAddress = "[::1]:7000".parse().unwrap();
        assert_eq!(v6.host(), "::1");
        assert_eq!(v6.to_string(), "[::1]:7000");
        assert_eq!(
            " 127.0.0.1:5555 "
                .parse::<ServerAddress>()
                .unwrap()
                .to_string(),
            "127.0.0.1:5555"
        );
    }

    #[test]
    fn bad_addresses_are_explained() {
        for (text, reason) in [
            ("localhost", "missing :PORT"),
            ("localhost:", "port"),
            ("localhost:99999", "port"),
            ("localhost:0", "port"),
            (":5555", "host is empty"),
            ("::1:5555", "brackets"),
            ("[::1]5555", "missing :PORT"),
            ("[::1:5555", "']'"),
            ("a b:1", "space"),
        ] {
            let err = text.parse::<ServerAddress>().unwrap_err().to_string();
            assert!(err.contains(reason), "{text}: {err}");
            assert!(err.contains("HOST:PORT"), "{err}");
        }
    }
}
