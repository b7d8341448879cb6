//! The command line's shape: every subcommand, flag and default (clap derive).
//!
//! This is the public interface of the `confide` binary (DESIGN.md section 5). It only
//! describes arguments; it must not connect or print.

use clap::{Args, Parser, Subcommand};
use confide_client::{Fingerprint, ServerAddress};
use confide_proto::{RoomName, UserName};
use std::path::PathBuf;

/// The server `register` and `login` use when neither `--server` nor a stored session
/// names one.
pub const DEFAULT_SERVER: &str = "127.0.0.1:5555";

/// Confide secure chat from the command line.
#[derive(Debug, Parser)]
#[command(name = "confide", version, about, max_term_width = 100)]
pub struct Cli {
    /// Profile directory holding the session, pinned servers and room positions.
    #[arg(long, global = true, env = "CONFIDE_HOME", value_name = "DIR")]
    pub profile: Option<PathBuf>,

    /// Server to use (default: the logged-in session's server; 127.0.0.1:5555 for
    /// register and login).
    #[arg(long, global = true, value_name = "HOST:PORT")]
    pub server: Option<ServerAddress>,

    /// Expected SHA-256 fingerprint of the server's certificate; pins it.
    #[arg(long, global = true, value_name = "FP")]
    pub fingerprint: Option<Fingerprint>,

    /// Print one JSON object per line (fields in the README, "JSON output").
    #[arg(long, global = true)]
    pub json: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create an account and log in (password from CONFIDE_PASSWORD or a prompt).
    Register(AccountArgs),
    /// Log in (password from CONFIDE_PASSWORD or a prompt).
    Login(AccountArgs),
    /// End the session on the server and forget it.
    Logout,
    /// Send a message to a room or a user.
    Send(SendArgs),
    /// Catch up on what was missed, then print events as they arrive.
    Listen(ListenArgs),
    /// Print a room's or conversation's recent history, oldest first.
    History(HistoryArgs),
    /// List rooms: yours, your invitations and public ones.
    Rooms,
    /// List a room's members and who is online.
    Users(UsersArgs),
    /// Create, join, leave and moderate rooms.
    #[command(subcommand)]
    Room(RoomCommand),
    /// Interactive terminal UI: rooms, conversation, who is online (/help inside).
    Chat(ChatArgs),
    /// Write a key file for a shared-key room, in the Fernet format of the original
    /// programs (weaker than the default end-to-end encrypted rooms).
    Keygen(KeygenArgs),
    /// Show the safety number and emoji you share with a user, to compare with them in
    /// person or over a channel you trust, and record that they matched.
    Verify(VerifyArgs),
    /// Send a file, end-to-end encrypted (an interrupted upload of the same file to the
    /// same place resumes).
    SendFile(SendFileArgs),
    /// Download, decrypt and check a file or voice message someone sent (an
    /// interrupted download resumes).
    GetFile(GetFileArgs),
    /// Send a voice message from a WAV file (encoded to Opus) or an Ogg Opus file.
    SendVoice(SendFileArgs),
    /// Delete one of your file or voice messages for everyone, and its encrypted file
    /// from the server (freeing your storage there).
    DeleteFile(DeleteFileArgs),
}

/// `send-file` and `send-voice`.
#[derive(Debug, Args)]
pub struct SendFileArgs {
    /// Where to send.
    #[command(flatten)]
    pub target: TargetArgs,
    /// The file.
    #[arg(value_name = "PATH")]
    pub path: std::path::PathBuf,
}

/// `get-file`.
#[derive(Debug, Args)]
pub struct GetFileArgs {
    /// The message's id (shown by `history` and `listen`).
    #[arg(value_name = "ID")]
    pub id: String,
    /// Where to save it: a file name, or a directory to save it in under the sender's
    /// name for it (made safe). Default: the current directory.
    #[arg(long, value_name = "PATH")]
    pub out: Option<std::path::PathBuf>,
    /// Replace the destination if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `delete-file`.
#[derive(Debug, Args)]
pub struct DeleteFileArgs {
    /// The message's id (shown by `history` and `listen`).
    #[arg(value_name = "ID")]
    pub id: String,
}

/// `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Whom to verify.
    #[arg(value_name = "USER")]
    pub user: UserName,
    /// Record that the numbers matched without asking.
    #[arg(long)]
    pub confirm: bool,
}

/// `keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the key.
    #[arg(long, default_value = "secret.key", value_name = "PATH")]
    pub out: std::path::PathBuf,
    /// Replace the file if it exists.
    #[arg(long)]
    pub force: bool,
}

/// `register` and `login`.
#[derive(Debug, Args)]
pub struct AccountArgs {
    /// Account name.
    #[arg(long, short, value_name = "NAME")]
    pub user: UserName,
}

/// A room or a direct conversation (exactly one).
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// A room by name.
    #[arg(long, value_name = "ROOM")]
    pub room: Option<RoomName>,
    /// The direct conversation with a user.
    #[arg(long, value_name = "USER")]
    pub to: Option<UserName>,
}

/// `send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Where to send.
    #[command(flatten)]
    pub target: TargetArgs,
    /// The message; words are joined with spaces. `-` reads it from standard input.
    /// Put text that starts with `-` after `--`.
    #[arg(required = true, value_name = "TEXT")]
    pub text: Vec<String>,
}

/// `listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Only this room.
    #[arg(long, value_name = "ROOM", conflicts_with = "to")]
    pub room: Option<RoomName>,
    /// Only the direct conversation with this user.
    #[arg(long, value_name = "USER")]
    pub to: Option<UserName>,
    /// Exit after this many messages.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Exit after this many seconds (an error if --count was not reached).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
}

/// `history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Which room or conversation.
    #[command(flatten)]
    pub target: TargetArgs,
    /// How many entries.
    #[arg(long, default_value_t = 50, value_name = "N")]
    pub limit: u32,
}

/// `chat`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Open this room first (joining it if you are not a member yet).
    #[arg(long, value_name = "ROOM")]
    pub room: Option<RoomName>,
}

/// `users`.
#[derive(Debug, Args)]
pub struct UsersArgs {
    /// The room (default: lobby).
    #[arg(long, value_name = "ROOM")]
    pub room: Option<RoomName>,
}

/// `room ...`.
#[derive(Debug, Subcommand)]
pub enum RoomCommand {
    /// Create a room that you own: end-to-end encrypted (MLS), or with a shared key
    /// (weaker) if --key-file or --passphrase is given.
    Create {
        /// Room name.
        name: RoomName,
        /// Joined by invitation only.
        #[arg(long)]
        private: bool,
        /// A shared key instead of MLS.
        #[command(flatten)]
        key: NewRoomKeyArgs,
    },
    /// Store the key of a shared-key room you are in, so you can read and write it.
    Key {
        /// Room name.
        name: RoomName,
        /// Where the key comes from.
        #[command(flatten)]
        key: RoomKeyArgs,
    },
    /// Join a public room or one you were invited to.
    Join {
        /// Room name.
        name: RoomName,
    },
    /// Leave a room.
    Leave {
        /// Room name.
        name: RoomName,
    },
    /// Invite a user to a room.
    Invite {
        /// Room name.
        name: RoomName,
        /// Who.
        user: UserName,
    },
    /// Remove a member (owner only).
    Kick {
        /// Room name.
        name: RoomName,
        /// Who.
        user: UserName,
    },
    /// Remove a member and keep them out (owner only).
    Ban {
        /// Room name.
        name: RoomName,
        /// Who.
        user: UserName,
    },
    /// Lift a ban (owner only).
    Unban {
        /// Room name.
        name: RoomName,
        /// Who.
        user: UserName,
    },
}

/// The shared key of a new room, if it should have one instead of MLS (at most one
/// source).
#[derive(Debug, Args)]
#[group(required = false, multiple = false)]
pub struct NewRoomKeyArgs {
    /// Use the key in this file (written by `confide keygen`, or the original
    /// programs' `secret.key`). Weaker than MLS: no forward secrecy, and anyone who
    /// ever holds the file reads every message.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// Derive the key from a passphrase (from CONFIDE_ROOM_PASSPHRASE or a prompt).
    /// Weaker than MLS.
    #[arg(long)]
    pub passphrase: bool,
}

/// The key of an existing shared-key room (exactly one source).
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RoomKeyArgs {
    /// The room's key file.
    #[arg(long, value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// The room's passphrase (from CONFIDE_ROOM_PASSPHRASE or a prompt).
    #[arg(long)]
    pub passphrase: bool,
}

/// Where a shared room key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A key file.
    File(PathBuf),
    /// A passphrase, never taken from the command line.
    Passphrase,
}

impl NewRoomKeyArgs {
    /// The key source, or `None` for an MLS room.
    #[must_use]
    pub fn source(&self) -> Option<KeySource> {
        key_source(self.key_file.as_ref(), self.passphrase)
    }
}

impl RoomKeyArgs {
    /// The key source (clap makes sure there is one).
    #[must_use]
    pub fn source(&self) -> Option<KeySource> {
        key_source(self.key_file.as_ref(), self.passphrase)
    }
}

fn key_source(key_file: Option<&PathBuf>, passphrase: bool) -> Option<KeySource> {
    match key_file {
        Some(path) => Some(KeySource::File(path.clone())),
        None if passphrase => Some(KeySource::Passphrase),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn send_takes_words_flags_anywhere_and_dash_for_stdin() {
        let cli =
            Cli::try_parse_from(["confide", "send", "hello", "--room", "lobby", "x"]).unwrap();
        let Command::Send(args) = cli.command else {
            panic!("not send");
        };
        assert_eq!(args.text, ["hello", "x"]);
        assert_eq!(args.target.room.unwrap().as_str(), "lobby");
        let cli = Cli::try_parse_from(["confide", "send", "--room", "lobby", "--", "-5", "--to"])
            .unwrap();
        let Command::Send(args) = cli.command else {
            panic!("not send");
        };
        assert_eq!(args.text, ["-5", "--to"]);
        let cli = Cli::try_parse_from(["confide", "send", "--to", "bob", "-"]).unwrap();
        let Command::Send(args) = cli.command else {
            panic!("not send");
        };
        assert_eq!(args.text, ["-"]);
    }

    #[test]
    fn usage_errors() {
        for argv in [
            &["confide", "send", "hello"][..],
            &["confide", "send", "--room", "a", "--to", "bob", "x"],
            &["confide", "send", "--room", "a"],
            &["confide", "login"],
            &["confide", "login", "--user", "a b"],
            &["confide", "--server", "nope", "rooms"],
            &["confide", "--fingerprint", "AB", "rooms"],
            &["confide", "listen", "--room", "a", "--to", "bob"],
        ] {
            let err = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}");
        }
    }

    #[test]
    fn chat_takes_an_optional_room() {
        let cli = Cli::try_parse_from(["confide", "chat", "--room", "dev"]).unwrap();
        let Command::Chat(args) = cli.command else {
            panic!("not chat");
        };
        assert_eq!(args.room.unwrap().as_str(), "dev");
        let cli = Cli::try_parse_from(["confide", "chat"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Chat(ChatArgs { room: None })
        ));
        let err = Cli::try_parse_from(["confide", "chat", "--room", "a b"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn room_create_and_key_take_one_key_source() {
        let room = |argv: &[&str]| match Cli::try_parse_from(argv).map(|cli| cli.command) {
            Ok(Command::Room(command)) => Ok(command),
            Ok(other) => panic!("not room: {other:?}"),
            Err(err) => Err(err.exit_code()),
        };
        let Ok(RoomCommand::Create { name, private, key }) =
            room(&["confide", "room", "create", "ops", "--private"])
        else {
            panic!("not create");
        };
        assert_eq!(name.as_str(), "ops");
        assert!(private);
        assert_eq!(key.source(), None);
        let Ok(RoomCommand::Create { key, .. }) =
            room(&["confide", "room", "create", "ops", "--key-file", "k.key"])
        else {
            panic!("not create");
        };
        assert_eq!(key.source(), Some(KeySource::File(PathBuf::from("k.key"))));
        let Ok(RoomCommand::Create { key, .. }) =
            room(&["confide", "room", "create", "--passphrase", "ops"])
        else {
            panic!("not create");
        };
        assert_eq!(key.source(), Some(KeySource::Passphrase));
        let Ok(RoomCommand::Key { name, key }) =
            room(&["confide", "room", "key", "ops", "--passphrase"])
        else {
            panic!("not key");
        };
        assert_eq!(name.as_str(), "ops");
        assert_eq!(key.source(), Some(KeySource::Passphrase));
        let Ok(RoomCommand::Key { key, .. }) =
            room(&["confide", "room", "key", "ops", "--key-file", "/k"])
        else {
            panic!("not key");
        };
        assert_eq!(key.source(), Some(KeySource::File(PathBuf::from("/k"))));
        for argv in [
            &[
                "confide",
                "room",
                "create",
                "ops",
                "--key-file",
                "k",
                "--passphrase",
            ][..],
            &["confide", "room", "key", "ops"],
            &[
                "confide",
                "room",
                "key",
                "ops",
                "--key-file",
                "k",
                "--passphrase",
            ],
            // The passphrase is never an argument.
            &["confide", "room", "key", "ops", "--passphrase", "hunter2"],
            &["confide", "room", "create", "ops", "--passphrase=hunter2"],
        ] {
            assert_eq!(room(argv).err(), Some(2), "{argv:?}");
        }
    }

    #[test]
    fn global_flags_anywhere() {
        let cli = Cli::try_parse_from([
            "confide",
            "rooms",
            "--json",
            "--server",
            "example.org:7000",
            "--profile",
            "/tmp/p",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.server.unwrap().to_string(), "example.org:7000");
        assert_eq!(cli.profile.unwrap(), PathBuf::from("/tmp/p"));
    }
}
