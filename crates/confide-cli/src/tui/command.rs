//! What the input line means: a message, or a slash command such as `/join dev`.
//!
//! Parsing is a pure function so that every command and every usage error is
//! unit-tested. A line starting with `//` is a message starting with `/`. This module
//! must not act on a command; [`super::state`] does.

use confide_crypto::payload::MAX_EMOJI_BYTES;
use confide_proto::{NameError, RoomName, UserName};
use std::path::PathBuf;

/// What a submitted line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Nothing (the line was empty or blank).
    Nothing,
    /// A message for the current conversation.
    Message(String),
    /// A slash command.
    Command(SlashCommand),
}

/// The slash commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlashCommand {
    /// `/join [ROOM]`: join a room (without a name: accept the current invitation).
    Join(Option<RoomName>),
    /// `/create ROOM [private]`.
    Create {
        /// The room's name.
        name: RoomName,
        /// Invitation only.
        private: bool,
    },
    /// `/leave`: leave the current room.
    Leave,
    /// `/invite USER` to the current room.
    Invite(UserName),
    /// `/kick USER` from the current room.
    Kick(UserName),
    /// `/ban USER` from the current room.
    Ban(UserName),
    /// `/msg USER TEXT`: send to the direct conversation and switch to it.
    Msg {
        /// The other user.
        to: UserName,
        /// The message.
        text: String,
    },
    /// `/rooms`: list rooms, including public ones to join.
    Rooms,
    /// `/file PATH`: send a file to the current conversation.
    SendFile(PathBuf),
    /// `/files`: list the files and voice messages loaded in the current conversation.
    Files,
    /// `/save [N] [PATH]`: save the Nth newest file of the current conversation (the
    /// newest without N) as PATH, inside PATH if it is a directory, or in the current
    /// directory under its own name.
    Save {
        /// Which file, counting from the newest (1).
        number: Option<usize>,
        /// Where to save it.
        path: Option<PathBuf>,
    },
    /// `/edit TEXT`: replace the text of the user's newest text message in the current
    /// conversation.
    Edit(String),
    /// `/delete [N]`: delete the user's newest message in the current conversation, or
    /// file N of `/files` (theirs), for everyone; a file goes from the server too.
    Delete(Option<usize>),
    /// `/reply TEXT`: reply to the newest message of someone else in the current
    /// conversation.
    Reply(String),
    /// `/react EMOJI`: add a reaction to the newest message of someone else in the
    /// current conversation, or take back the same reaction of this user's.
    React(String),
    /// `/help`.
    Help,
    /// `/quit`.
    Quit,
}

/// Why a line is not a valid command. Messages are for the status line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// A command that does not exist.
    #[error("unknown command /{0}; /help lists the commands")]
    Unknown(String),
    /// Missing or extra arguments.
    #[error("usage: {0}")]
    Usage(&'static str),
    /// A room or user name that breaks the naming rules.
    #[error("invalid {what} name {name:?}: {source}")]
    Name {
        /// `room` or `user`.
        what: &'static str,
        /// The name given.
        name: String,
        /// The rule it breaks.
        source: NameError,
    },
}

/// The lines `/help` shows.
pub const HELP: &[&str] = &[
    "Type a message and press Enter to send it to the current conversation.",
    "",
    "/join ROOM             join a room (/join alone accepts the current invitation)",
    "/create ROOM [private] create a room that you own",
    "/leave                 leave the current room",
    "/invite USER           invite a user to the current room",
    "/kick USER             remove a member (owner only)",
    "/ban USER              remove a member and keep them out (owner only)",
    "/msg USER TEXT         send to the conversation with USER and switch to it",
    "/rooms                 list rooms, including public ones you can join",
    "/file PATH             send a file (encrypted end to end) to this conversation",
    "/files                 list the files in this conversation, newest first",
    "/save [N] [PATH]       save the newest file (or number N of /files) as PATH",
    "/edit TEXT             replace the text of your last message here",
    "/delete [N]            delete your last message here (or your file N of /files)",
    "/reply TEXT            reply to the last message someone else sent here",
    "/react EMOJI           react to the last message someone else sent here (again: undo)",
    "/help                  this help",
    "/quit                  leave the chat (or Ctrl+C)",
    "",
    "Alt+Up/Alt+Down or Ctrl+P/Ctrl+N switch rooms; PageUp/PageDown scroll",
    "(PageUp at the top loads older messages); Esc closes this window.",
    "[--:--:--] marks a message not yet acknowledged by the server.",
    "Start a message with // to send text that starts with /.",
];

const USAGE_JOIN: &str = "/join ROOM";
const USAGE_CREATE: &str = "/create ROOM [private]";
const USAGE_INVITE: &str = "/invite USER";
const USAGE_KICK: &str = "/kick USER";
const USAGE_BAN: &str = "/ban USER";
const USAGE_MSG: &str = "/msg USER TEXT";
const USAGE_FILE: &str = "/file PATH";
const USAGE_SAVE: &str = "/save [N] [PATH] (N counts from 1, the newest file)";
const USAGE_EDIT: &str = "/edit TEXT";
const USAGE_DELETE: &str = "/delete [N] (N as /files numbers your files)";
const USAGE_REPLY: &str = "/reply TEXT";
const USAGE_REACT: &str = "/react EMOJI (one emoji or short word, no spaces)";

/// Parses a submitted line.
///
/// # Errors
/// A [`CommandError`] for an unknown command, wrong arguments or an invalid name.
pub fn parse_input(line: &str) -> Result<Input, CommandError> {
    if line.trim().is_empty() {
        return Ok(Input::Nothing);
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Ok(Input::Message(line.to_owned()));
    };
    if rest.starts_with('/') {
        return Ok(Input::Message(rest.to_owned()));
    }
    let (name, args) = match rest.split_once(char::is_whitespace) {
        Some((name, args)) => (name, args.trim()),
        None => (rest, ""),
    };
    let words: Vec<&str> = args.split_whitespace().collect();
    let command = match name.to_lowercase().as_str() {
        "join" => match words[..] {
            [] => SlashCommand::Join(None),
            [room] => SlashCommand::Join(Some(room_name(room)?)),
            _ => return Err(CommandError::Usage(USAGE_JOIN)),
        },
        "create" => match words[..] {
            [room] => SlashCommand::Create {
                name: room_name(room)?,
                private: false,
            },
            [room, flag] if flag.eq_ignore_ascii_case("private") => SlashCommand::Create {
                name: room_name(room)?,
                private: true,
            },
            _ => return Err(CommandError::Usage(USAGE_CREATE)),
        },
        "leave" | "part" => no_arguments(&words, SlashCommand::Leave, "/leave")?,
        "invite" => SlashCommand::Invite(one_user(&words, USAGE_INVITE)?),
        "kick" => SlashCommand::Kick(one_user(&words, USAGE_KICK)?),
        "ban" => SlashCommand::Ban(one_user(&words, USAGE_BAN)?),
        "msg" => {
            let Some((to, text)) = args.split_once(char::is_whitespace) else {
                return Err(CommandError::Usage(USAGE_MSG));
            };
            let text = text.trim_start();
            if text.trim().is_empty() {
                return Err(CommandError::Usage(USAGE_MSG));
            }
            SlashCommand::Msg {
                to: user_name(to)?,
                text: text.to_owned(),
            }
        }
        "rooms" => no_arguments(&words, SlashCommand::Rooms, "/rooms")?,
        // A path is the rest of the line as typed: it may hold spaces.
        "file" | "send-file" | "upload" => match args {
            "" => return Err(CommandError::Usage(USAGE_FILE)),
            path => SlashCommand::SendFile(PathBuf::from(path)),
        },
        "files" => no_arguments(&words, SlashCommand::Files, "/files")?,
        "save" => save(args)?,
        // The text as typed, inner spaces kept.
        "edit" => match args {
            "" => return Err(CommandError::Usage(USAGE_EDIT)),
            text => SlashCommand::Edit(text.to_owned()),
        },
        "delete" | "unsend" => match words[..] {
            [] => SlashCommand::Delete(None),
            [number] => match number.parse::<usize>() {
                Ok(number) if number > 0 => SlashCommand::Delete(Some(number)),
                _ => return Err(CommandError::Usage(USAGE_DELETE)),
            },
            _ => return Err(CommandError::Usage(USAGE_DELETE)),
        },
        "reply" | "re" => match args {
            "" => return Err(CommandError::Usage(USAGE_REPLY)),
            text => SlashCommand::Reply(text.to_owned()),
        },
        "react" => match words[..] {
            [emoji] if emoji.len() <= MAX_EMOJI_BYTES => SlashCommand::React(emoji.to_owned()),
            _ => return Err(CommandError::Usage(USAGE_REACT)),
        },
        "help" => SlashCommand::Help,
        "quit" | "exit" => SlashCommand::Quit,
        _ => return Err(CommandError::Unknown(name.to_owned())),
    };
    Ok(Input::Command(command))
}

/// `/save [N] [PATH]`: a leading number picks the file; the rest is the path.
fn save(args: &str) -> Result<SlashCommand, CommandError> {
    let (first, rest) = match args.split_once(char::is_whitespace) {
        Some((first, rest)) => (first, rest.trim()),
        None => (args, ""),
    };
    let (number, path) = if !first.is_empty() && first.bytes().all(|b| b.is_ascii_digit()) {
        match first.parse::<usize>() {
            Ok(number) if number > 0 => (Some(number), rest),
            _ => return Err(CommandError::Usage(USAGE_SAVE)),
        }
    } else {
        (None, args)
    };
    Ok(SlashCommand::Save {
        number,
        path: (!path.is_empty()).then(|| PathBuf::from(path)),
    })
}

fn no_arguments(
    words: &[&str],
    command: SlashCommand,
    usage: &'static str,
) -> Result<SlashCommand, CommandError> {
    if words.is_empty() {
        Ok(command)
    } else {
        Err(CommandError::Usage(usage))
    }
}

fn one_user(words: &[&str], usage: &'static str) -> Result<UserName, CommandError> {
    match words {
        [user] => user_name(user),
        _ => Err(CommandError::Usage(usage)),
    }
}

fn room_name(raw: &str) -> Result<RoomName, CommandError> {
    // `#dev` is how rooms are shown, so accept it as input too.
    let bare = raw.strip_prefix('#').unwrap_or(raw);
    RoomName::parse(bare).map_err(|source| CommandError::Name {
        what: "room",
        name: raw.to_owned(),
        source,
    })
}

fn user_name(raw: &str) -> Result<UserName, CommandError> {
    let bare = raw.strip_prefix('@').unwrap_or(raw);
    UserName::parse(bare).map_err(|source| CommandError::Name {
        what: "user",
        name: raw.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(line: &str) -> SlashCommand {
        match parse_input(line) {
            Ok(Input::Command(command)) => command,
            other => panic!("{line:?} gave {other:?}"),
        }
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    fn user(name: &str) -> UserName {
        UserName::parse(name).unwrap()
    }

    #[test]
    fn messages_and_blank_lines() {
        assert_eq!(parse_input(""), Ok(Input::Nothing));
        assert_eq!(parse_input("   "), Ok(Input::Nothing));
        assert_eq!(
            parse_input("hello  there "),
            Ok(Input::Message("hello  there ".to_owned()))
        );
        assert_eq!(
            parse_input(" /join dev"),
            Ok(Input::Message(" /join dev".to_owned()))
        );
        assert_eq!(
            parse_input("//shrug"),
            Ok(Input::Message("/shrug".to_owned()))
        );
    }

    #[test]
    fn every_command() {
        assert_eq!(command("/join dev"), SlashCommand::Join(Some(room("dev"))));
        assert_eq!(command("/join #dev"), SlashCommand::Join(Some(room("dev"))));
        assert_eq!(command("/join"), SlashCommand::Join(None));
        assert_eq!(
            command("/create ops"),
            SlashCommand::Create {
                name: room("ops"),
                private: false
            }
        );
        assert_eq!(
            command("/create ops Private"),
            SlashCommand::Create {
                name: room("ops"),
                private: true
            }
        );
        assert_eq!(command("/leave"), SlashCommand::Leave);
        assert_eq!(command("/invite bob"), SlashCommand::Invite(user("bob")));
        assert_eq!(command("/kick @bob"), SlashCommand::Kick(user("bob")));
        assert_eq!(command("/ban  bob "), SlashCommand::Ban(user("bob")));
        assert_eq!(
            command("/msg bob hi  there"),
            SlashCommand::Msg {
                to: user("bob"),
                text: "hi  there".to_owned()
            }
        );
        assert_eq!(command("/rooms"), SlashCommand::Rooms);
        assert_eq!(command("/delete"), SlashCommand::Delete(None));
        assert_eq!(
            command("/edit  see  you at 5 "),
            SlashCommand::Edit("see  you at 5".to_owned())
        );
        assert_eq!(parse_input("/edit  "), Err(CommandError::Usage(USAGE_EDIT)));
        assert_eq!(command("/unsend 2"), SlashCommand::Delete(Some(2)));
        assert_eq!(
            command("/reply  sure,  at noon"),
            SlashCommand::Reply("sure,  at noon".to_owned())
        );
        assert_eq!(command("/re ok"), SlashCommand::Reply("ok".to_owned()));
        assert_eq!(parse_input("/reply"), Err(CommandError::Usage(USAGE_REPLY)));
        assert_eq!(command("/react 👍"), SlashCommand::React("👍".to_owned()));
        assert_eq!(command("/react  +1 "), SlashCommand::React("+1".to_owned()));
        let too_long = format!("/react {}", "x".repeat(MAX_EMOJI_BYTES + 1));
        for bad in ["/react", "/react 👍 🎉", too_long.as_str()] {
            assert_eq!(
                parse_input(bad),
                Err(CommandError::Usage(USAGE_REACT)),
                "{bad}"
            );
        }
        for bad in ["/delete 0", "/delete x", "/delete 1 2"] {
            assert_eq!(
                parse_input(bad),
                Err(CommandError::Usage(USAGE_DELETE)),
                "{bad}"
            );
        }
        assert_eq!(command("/help"), SlashCommand::Help);
        assert_eq!(command("/quit"), SlashCommand::Quit);
        assert_eq!(command("/QUIT"), SlashCommand::Quit);
    }

    #[test]
    fn usage_errors_say_what_to_type() {
        for (line, usage) in [
            ("/join a b", USAGE_JOIN),
            ("/create", USAGE_CREATE),
            ("/create ops public", USAGE_CREATE),
            ("/invite", USAGE_INVITE),
            ("/kick a b", USAGE_KICK),
            ("/ban", USAGE_BAN),
            ("/msg bob", USAGE_MSG),
            ("/msg bob   ", USAGE_MSG),
            ("/msg", USAGE_MSG),
            ("/leave now", "/leave"),
            ("/rooms all", "/rooms"),
        ] {
            assert_eq!(parse_input(line), Err(CommandError::Usage(usage)), "{line}");
        }
        assert_eq!(
            parse_input("/frobnicate x").unwrap_err().to_string(),
            "unknown command /frobnicate; /help lists the commands"
        );
        assert_eq!(
            parse_input("/create ops private").map(|_| ()),
            Ok(()),
            "private is a flag, not a name"
        );
        let err = parse_input("/join bad/name").unwrap_err();
        assert!(matches!(err, CommandError::Name { what: "room", .. }));
        assert!(
            err.to_string()
                .starts_with("invalid room name \"bad/name\"")
        );
        assert!(matches!(
            parse_input("/msg x hi"),
            Err(CommandError::Name { what: "user", .. })
        ));
        assert_eq!(parse_input("/"), Err(CommandError::Unknown(String::new())));
    }

    #[test]
    fn file_commands_take_the_rest_of_the_line_as_a_path() {
        assert_eq!(
            command("/file  my notes.txt "),
            SlashCommand::SendFile(PathBuf::from("my notes.txt"))
        );
        assert_eq!(
            command("/upload /tmp/a"),
            SlashCommand::SendFile(PathBuf::from("/tmp/a"))
        );
        assert_eq!(parse_input("/file"), Err(CommandError::Usage(USAGE_FILE)));
        assert_eq!(command("/files"), SlashCommand::Files);
        assert_eq!(parse_input("/files 2"), Err(CommandError::Usage("/files")));
        assert_eq!(
            command("/save"),
            SlashCommand::Save {
                number: None,
                path: None
            }
        );
        assert_eq!(
            command("/save 2"),
            SlashCommand::Save {
                number: Some(2),
                path: None
            }
        );
        assert_eq!(
            command("/save 3 saved files/report.pdf"),
            SlashCommand::Save {
                number: Some(3),
                path: Some(PathBuf::from("saved files/report.pdf"))
            }
        );
        // A path that does not start with a number is all path.
        assert_eq!(
            command("/save ./2024 report.pdf"),
            SlashCommand::Save {
                number: None,
                path: Some(PathBuf::from("./2024 report.pdf"))
            }
        );
        for bad in ["/save 0", "/save 0 x", "/save 99999999999999999999999"] {
            assert_eq!(
                parse_input(bad),
                Err(CommandError::Usage(USAGE_SAVE)),
                "{bad}"
            );
        }
    }
}
