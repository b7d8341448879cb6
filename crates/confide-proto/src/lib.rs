//! The Confide wire protocol, sans-I/O.
//!
//! This crate defines every frame that crosses the wire between a Confide client and
//! server, and the codec that turns them into bytes and back. It does no I/O, knows
//! nothing about sockets, TLS, clocks or tokio: callers feed it byte buffers and get
//! typed values out, which keeps it pure, testable and fuzzable.
//!
//! On the wire a connection is TLS 1.3 carrying length-prefixed frames (see [`frame`]).
//! The first frame each way is the version handshake ([`handshake`]); after it the
//! client sends [`ClientFrame`]s and the server sends [`ServerFrame`]s ([`message`]).
//! `PROTOCOL.md` at the repository root describes the same thing for implementers in
//! other languages.
//!
//! Message bodies are opaque bytes to the server: it stores and relays them without
//! looking inside.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod e2e;
pub mod frame;
pub mod handshake;
pub mod ids;
pub mod message;
pub mod names;

pub use e2e::{
    ClaimedKeyPackage, DeviceId, Epoch, IdentityBundle, PendingWelcome, RoomEncryption, WelcomeId,
    WelcomeOut, WelcomeRecipient,
};
pub use frame::{DecodeError, FrameDecoder, decode_frame, encode_frame};
pub use frame::{EncodeError, MAX_FRAME_LEN, decode_value};
pub use handshake::{
    ClientHello, HelloRejected, PROTOCOL_VERSION, ServerHello, ServerHelloResult, check_hello,
};
pub use ids::{
    BlobId, BlobIdError, MessageNonce, Password, RequestId, RoomId, Seq, SessionToken, Timestamp,
    UserId,
};
pub use message::{
    BLOB_CHUNK_OVERHEAD, BlobInfo, ClientFrame, EntryKind, ErrorCode, Event, LogEntry,
    MemberChange, MemberInfo, Membership, ProtoError, Reply, Request, RoomInfo, RoomKind,
    ServerFrame, SyncCursor, Target, blob_chunks,
};
pub use names::{NameError, RoomName, UserName};
