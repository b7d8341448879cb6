//! The version handshake: the first frame in each direction.
//!
//! These two frames keep their shape in every protocol version, so that any client and
//! any server can tell each other apart and fail with a clear message instead of
//! misreading each other's frames.

use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 2;

/// Bytes that open every client hello, so that a server can tell a Confide client from
/// something else that happened to connect.
pub const MAGIC: [u8; 8] = *b"CONFIDE\0";

/// The client's first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    /// Always [`MAGIC`].
    pub magic: [u8; 8],
    /// The protocol version the client speaks.
    pub version: u32,
    /// Free text naming the client software, for logs (for example `confide-cli 0.1.0`).
    pub software: String,
}

impl ClientHello {
    /// A hello for this crate's protocol version.
    pub fn new(software: impl Into<String>) -> ClientHello {
        ClientHello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            software: software.into(),
        }
    }
}

/// The server's answer to a [`ClientHello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerHelloResult {
    /// The server speaks the client's version; requests may follow.
    Accepted(ServerHello),
    /// The server cannot talk to this client; it closes the connection.
    Rejected(HelloRejected),
}

/// What an accepting server says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerHello {
    /// The version both sides will speak.
    pub version: u32,
    /// Free text naming the server software.
    pub software: String,
    /// The largest frame payload the server accepts.
    pub max_frame: u32,
    /// The largest message body the server accepts.
    pub max_body: u32,
}

/// Why the server refused the hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloRejected {
    /// Lowest protocol version the server speaks.
    pub min_version: u32,
    /// Highest protocol version the server speaks.
    pub max_version: u32,
    /// For people, for example "client speaks protocol 2, server speaks 1 to 1".
    pub message: String,
}

/// Checks a client's hello against the versions a server speaks.
///
/// # Errors
/// A [`HelloRejected`] explaining the mismatch, or that the peer is not a Confide client.
pub fn check_hello(hello: &ClientHello, min: u32, max: u32) -> Result<u32, HelloRejected> {
    if hello.magic != MAGIC {
        return Err(HelloRejected {
            min_version: min,
            max_version: max,
            message: "not a Confide client (bad magic)".to_owned(),
        });
    }
    if hello.version < min || hello.version > max {
        return Err(HelloRejected {
            min_version: min,
            max_version: max,
            message: format!(
                "client speaks protocol version {}, this server speaks {min} to {max}; \
                 upgrade the {}",
                hello.version,
                if hello.version < min {
                    "client"
                } else {
                    "server"
                }
            ),
        });
    }
    Ok(hello.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_mismatch_is_explained() {
        let mut hello = ClientHello::new("test");
        hello.version = 1;
        assert_eq!(check_hello(&hello, 1, 1), Ok(1));
        hello.version = 2;
        let err = check_hello(&hello, 1, 1).unwrap_err();
        assert!(err.message.contains("client speaks protocol version 2"));
        assert!(err.message.contains("upgrade the server"));
        hello.magic = *b"GET / HT";
        assert!(
            check_hello(&hello, 1, 1)
                .unwrap_err()
                .message
                .contains("bad magic")
        );
    }

    #[test]
    fn hello_encoding_is_frozen() {
        // The hello's bytes must never change across versions: pin them.
        let mut hello = ClientHello::new("x");
        hello.version = 1;
        let bytes = postcard::to_allocvec(&hello).unwrap();
        assert_eq!(bytes, b"CONFIDE\0\x01\x01x");
    }
}
