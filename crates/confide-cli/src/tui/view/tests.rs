use super::*;
use crate::tui::fixtures::*;
use crate::tui::input::Action;
use crate::tui::state::{Outcome, Status};
use confide_client::{ClientEvent, Unreadable};
use confide_proto::{MemberChange, MemberInfo, Membership, RoomEncryption, Seq};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::time::Duration;

const DAY: i64 = 86_400_000;

/// Draws `state` on a `width` x `height` test terminal; returns its rows and the
/// cursor position.
fn screen_with_cursor(state: &AppState, width: u16, height: u16) -> (Vec<String>, Position) {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| draw(frame, state)).unwrap();
    let buffer = terminal.backend().buffer().clone();
    let rows = (0..height)
        .map(|y| (0..width).map(|x| buffer[(x, y)].symbol()).collect())
        .collect();
    (rows, terminal.get_cursor_position().unwrap())
}

fn screen(state: &AppState, width: u16, height: u16) -> Vec<String> {
    screen_with_cursor(state, width, height).0
}

/// A state showing `rooms`, with the first history request answered (nothing older).
fn opened(rooms: Vec<confide_proto::RoomInfo>) -> AppState {
    let mut state = state();
    state.start(rooms, None);
    let room = state.rooms.selected_id().unwrap();
    state.on_outcome(Outcome::History {
        room,
        result: Ok(confide_client::HistoryPage {
            entries: Vec::new(),
            more: false,
        }),
    });
    state
}

fn row_with<'a>(rows: &'a [String], text: &str) -> &'a str {
    rows.iter()
        .find(|row| row.contains(text))
        .unwrap_or_else(|| panic!("no row contains {text:?}:\n{}", rows.join("\n")))
}

fn member_info(name: &str, owner: bool, online: bool) -> MemberInfo {
    MemberInfo {
        user: user(name),
        owner,
        online,
    }
}

/// The lobby with three lines over two days, two unread messages in `#dev`, an
/// invitation, a conversation with bob, and who is online in the lobby.
fn busy() -> AppState {
    let mut state = opened(vec![lobby(), dev(), direct(), secret()]);
    for event in [
        live(message(1, 1, TS, "alice", "hello")),
        live(member_entry(1, 2, "carol", "carol", MemberChange::Joined)),
        live(message(1, 3, TS + DAY, "bob", "next day")),
        live(message(4, 1, TS, "bob", "one")),
        live(message(4, 2, TS, "bob", "two")),
        ClientEvent::SyncComplete,
    ] {
        state.on_client_event(event);
    }
    state.on_outcome(Outcome::Members {
        room: RoomId(1),
        result: Ok(vec![
            member_info("bob", true, true),
            member_info("carol", false, false),
            member_info("alice", false, true),
        ]),
    });
    for ch in "hel".chars() {
        state.on_action(Action::Insert(ch));
    }
    state
}

#[test]
fn draws_rooms_conversation_members_input_and_status() {
    let state = busy();
    let (rows, cursor) = screen_with_cursor(&state, 100, 20);
    // The selected room is highlighted.
    let mut terminal = Terminal::new(TestBackend::new(100, 20)).unwrap();
    terminal.draw(|frame| draw(frame, &state)).unwrap();
    let buffer = terminal.backend().buffer();
    assert!(buffer[(1, 1)].modifier.contains(Modifier::REVERSED));
    assert!(!buffer[(1, 2)].modifier.contains(Modifier::REVERSED));
    let text = rows.join("\n");
    // Room list: tags, unread counts, the invitation marker.
    assert!(row_with(&rows, " Rooms ").starts_with('┌'));
    assert!(text.contains("│#lobby "), "{text}");
    assert!(text.contains("│#dev (2)"), "{text}");
    assert!(text.contains("│#secret (invited)"), "{text}");
    assert!(text.contains("│@bob"), "{text}");
    // The conversation, with day separators and a membership notice.
    let first_day = row_with(&rows, "--- 2026-11-23 ---");
    assert!(first_day.contains("│--- 2026-11-23 ---"), "{text}");
    let hello = row_with(&rows, "[21:19:56] alice: hello");
    assert!(hello.contains("│[21:19:56] alice: hello "));
    assert!(text.contains("[21:20:01] * carol joined"), "{text}");
    assert!(text.contains("--- 2026-11-24 ---"), "{text}");
    assert!(text.contains("[21:19:56] bob: next day"), "{text}");
    // Lines are in order, newest at the bottom of the conversation.
    let position = |needle: &str| rows.iter().position(|row| row.contains(needle)).unwrap();
    assert!(position("2026-11-23") < position("alice: hello"));
    assert!(position("carol joined") < position("2026-11-24"));
    assert_eq!(
        position("bob: next day"),
        16,
        "the last row inside the border"
    );
    assert!(rows[0].contains("┐┌ #lobby [MLS] ─"), "{text}");
    // Who is online: alice and bob (the owner), not carol.
    assert!(text.contains("Online (2)"), "{text}");
    assert!(text.contains("│alice"), "{text}");
    assert!(text.contains("│bob (owner)"), "{text}");
    assert!(!text.contains("│carol"), "{text}");
    // The input line with the cursor after the text, and the status line.
    assert_eq!(rows[18].trim_end(), "> hel");
    assert_eq!(cursor, Position::new(5, 18));
    assert_eq!(rows[19].trim_end(), " connected | alice on 127.0.0.1:5555");
}

#[test]
fn status_line_shows_the_connection_and_the_last_message() {
    let mut state = busy();
    state.on_client_event(ClientEvent::Connection(ConnectionState::Reconnecting {
        attempt: 3,
        retry_in: Duration::from_secs(4),
    }));
    state.status = Some(Status {
        text: "not sent: no such room\nsecond line".to_owned(),
        level: Level::Error,
    });
    let rows = screen(&state, 100, 20);
    assert_eq!(
        rows[19].trim_end(),
        " reconnecting (attempt 3) | alice on 127.0.0.1:5555 | error: not sent: no such room \
         second line"
    );
    state.on_client_event(ClientEvent::Connection(ConnectionState::Connected));
    state.on_client_event(ClientEvent::Warning("entries skipped".to_owned()));
    let rows = screen(&state, 100, 20);
    assert_eq!(
        rows[19].trim_end(),
        " connected, catching up | alice on 127.0.0.1:5555 | warning: entries skipped"
    );
    state.on_client_event(ClientEvent::Connection(ConnectionState::Disconnected {
        reason: "session expired".to_owned(),
    }));
    assert!(screen(&state, 100, 20)[19].starts_with(" disconnected: session expired |"));
}

#[test]
fn long_messages_wrap_under_the_text() {
    let mut state = opened(vec![lobby()]);
    let long = "the quick brown fox jumps over the lazy dog and keeps running far away";
    state.on_client_event(live(message(1, 1, TS, "bob", long)));
    state.on_client_event(live(message(1, 2, TS, "bob", "first\nsecond")));
    // 60 columns: the room list but no members panel; 34 columns of text inside,
    // 18 after `[21:19:56] bob: `.
    let rows = screen(&state, 60, 12);
    let text = rows.join("\n");
    assert!(
        text.contains("│[21:19:56] bob: the quick brown   │"),
        "{text}"
    );
    assert!(
        text.contains("│           fox jumps over the     │"),
        "{text}"
    );
    assert!(
        text.contains("│           lazy dog and keeps     │"),
        "{text}"
    );
    assert!(
        text.contains("│           running far away       │"),
        "{text}"
    );
    assert!(text.contains("│[21:19:56] bob: first"), "{text}");
    assert!(text.contains("│           second"), "{text}");
    assert_eq!(total_rows(&state, RoomId(1), 34), 7);
    assert_eq!(newest_line_rows(&state, RoomId(1), 34), 2);
}

#[test]
fn scrolling_shows_older_rows() {
    let mut state = opened(vec![lobby()]);
    for seq in 1..=30 {
        state.on_client_event(live(message(1, seq, TS, "bob", &format!("line {seq}"))));
    }
    let rows = screen(&state, 100, 20);
    assert!(rows[16].contains("bob: line 30"));
    assert!(rows[1].contains("bob: line 15"));
    state.scroll = 5;
    let rows = screen(&state, 100, 20);
    assert!(rows[16].contains("bob: line 25"));
    assert!(rows[0].contains("(scrolled up; PageDown returns)"));
    // Beyond the top, the top is shown.
    state.scroll = 500;
    let rows = screen(&state, 100, 20);
    assert!(rows[1].contains("--- 2026-11-23 ---"));
    assert!(rows[2].contains("bob: line 1 "));
    assert!(rows[16].contains("bob: line 15"));
}

#[test]
fn pending_messages_are_marked_until_stored() {
    let mut state = busy();
    state.input.take();
    for ch in "on its way".chars() {
        state.on_action(Action::Insert(ch));
    }
    state.on_action(Action::Submit);
    let rows = screen(&state, 100, 20);
    assert!(
        row_with(&rows, "on its way").contains("│[--:--:--] alice: on its way"),
        "{}",
        rows.join("\n")
    );
    state.on_outcome(Outcome::Sent {
        pending: 1,
        result: Ok(confide_client::SentAck {
            room: RoomId(1),
            seq: Seq(4),
            timestamp: confide_proto::Timestamp(TS + DAY + 1000),
        }),
    });
    let rows = screen(&state, 100, 20);
    assert!(row_with(&rows, "on its way").contains("│[21:19:57] alice: on its way"));
}

#[test]
fn invitations_explain_how_to_accept() {
    let mut state = busy();
    state.on_action(Action::NextRoom);
    state.on_action(Action::NextRoom);
    let rows = screen(&state, 100, 20);
    let text = rows.join("\n");
    assert!(text.contains("┌ #secret "), "{text}");
    assert!(
        text.contains("You are invited to #secret. Type /join to accept."),
        "{text}"
    );
    assert!(text.contains("Online (0)"), "{text}");
}

#[test]
fn narrow_terminals_drop_the_side_panels() {
    let state = busy();
    let rows = screen(&state, 70, 12);
    let text = rows.join("\n");
    assert!(text.contains("Rooms"), "{text}");
    assert!(!text.contains("Online"), "{text}");
    let rows = screen(&state, 40, 12);
    let text = rows.join("\n");
    assert!(!text.contains("Rooms"), "{text}");
    assert!(text.contains("bob: next day"), "{text}");
    // Tiny terminals do not panic.
    for (width, height) in [(0, 0), (1, 1), (5, 3), (100, 2)] {
        screen(&state, width, height);
    }
}

#[test]
fn help_window_covers_the_conversation() {
    let mut state = busy();
    state.input.take();
    for ch in "/help".chars() {
        state.on_action(Action::Insert(ch));
    }
    state.on_action(Action::Submit);
    let rows = screen(&state, 100, 30);
    let text = rows.join("\n");
    assert!(text.contains(" help "), "{text}");
    assert!(text.contains("/msg USER TEXT"), "{text}");
    assert!(text.contains(" Esc closes "), "{text}");
    assert!(text.contains("#lobby"), "the room list stays visible");
}

#[test]
fn control_characters_never_reach_the_terminal() {
    let mut state = opened(vec![lobby()]);
    state.on_client_event(live(message(1, 1, TS, "bob", "\u{1b}[2Jboom\u{7}\ttab")));
    let rows = screen(&state, 100, 20);
    let row = row_with(&rows, "boom");
    assert!(row.contains("bob: \u{fffd}[2Jboom\u{fffd} tab"), "{row}");
    assert!(!rows.join("").contains('\u{1b}'));
}

#[test]
fn the_input_line_scrolls_to_keep_the_cursor_visible() {
    let mut state = state();
    let long: String = "abcdefghij".repeat(3);
    for ch in long.chars() {
        state.on_action(Action::Insert(ch));
    }
    state.on_action(Action::Insert('\n'));
    // 17 columns before the cursor: the end of the text, the newline shown as ↵.
    let (rows, cursor) = screen_with_cursor(&state, 20, 10);
    assert_eq!(rows[8], "> efghijabcdefghij\u{21b5} ");
    assert_eq!(cursor, Position::new(19, 8));
    state.on_action(Action::Home);
    let (rows, cursor) = screen_with_cursor(&state, 20, 10);
    assert_eq!(rows[8], "> abcdefghijabcdefgh");
    assert_eq!(cursor, Position::new(2, 8));
}

#[test]
fn wrapping_prefers_spaces_and_splits_long_words() {
    assert_eq!(wrap("hello world", 8, 8), ["hello ", "world"]);
    assert_eq!(wrap("abcdefghij", 4, 6), ["abcd", "efghij"]);
    assert_eq!(wrap("", 4, 4), [""]);
    assert_eq!(
        wrap("ab cd ef", 0, 0),
        ["a", "b", " ", "c", "d", " ", "e", "f"]
    );
    // Wide characters take two columns.
    assert_eq!(wrap("日本語です", 4, 4), ["日本", "語で", "す"]);
}

#[test]
fn the_title_says_when_older_messages_are_loading() {
    let mut state = state();
    state.start(vec![lobby()], None);
    assert!(screen(&state, 100, 20)[0].contains("┌ #lobby [MLS] (loading older messages) "));
    let empty = AppState::new(user("alice"), "h:1".to_owned(), utc_time);
    let text = screen(&empty, 100, 20).join("\n");
    assert!(text.contains("no conversation"), "{text}");
    assert!(
        text.contains("Join a room with /join ROOM, or /help."),
        "{text}"
    );
}

#[test]
fn unreadable_messages_say_why_and_alerts_are_red() {
    let mut state = opened(vec![lobby()]);
    state.on_client_event(live(unreadable_entry(
        1,
        1,
        TS,
        "bob",
        Unreadable::BeforeJoin,
    )));
    state.on_client_event(live(unreadable_entry(
        1,
        2,
        TS,
        "mallory",
        Unreadable::Tampered,
    )));
    let mut terminal = Terminal::new(TestBackend::new(120, 20)).unwrap();
    terminal.draw(|frame| draw(frame, &state)).unwrap();
    let rows = screen(&state, 120, 20);
    let early = row_with(&rows, "bob:");
    assert!(
        early.contains("[21:19:56] bob: [sent before this device joined]"),
        "{early}"
    );
    let tampered = row_with(&rows, "mallory:");
    assert!(
        tampered
            .contains("[21:19:56] mallory: \u{26a0} [REJECTED: the ciphertext was tampered with]"),
        "{tampered}"
    );
    let y = u16::try_from(
        rows.iter()
            .position(|row| row.contains("REJECTED"))
            .unwrap(),
    )
    .unwrap();
    let x = u16::try_from(
        rows[usize::from(y)]
            .chars()
            .position(|ch| ch == 'R')
            .unwrap(),
    )
    .unwrap();
    let cell = &terminal.backend().buffer()[(x, y)];
    assert_eq!(cell.fg, Color::Red);
    assert!(cell.modifier.contains(Modifier::BOLD));
}

#[test]
fn shared_key_rooms_are_labelled_weaker() {
    let mut ops = named(
        3,
        "ops",
        confide_proto::RoomKind::Private,
        Membership::Joined,
    );
    ops.encryption = RoomEncryption::SharedKey { salt: None };
    let mut state = opened(vec![ops]);
    state.on_client_event(live(shared_message(3, 1, TS, "bob", "hi")));
    let rows = screen(&state, 100, 20);
    let text = rows.join("\n");
    assert!(
        rows[0].contains("┌ #ops [shared key, weaker than MLS] ─"),
        "{text}"
    );
    assert!(text.contains("│#ops (shared key)"), "{text}");
    assert!(text.contains("[21:19:56] bob: hi"), "{text}");
}

#[test]
fn a_changed_identity_of_a_verified_user_stays_on_the_status_line() {
    let mut state = busy();
    state.on_client_event(ClientEvent::IdentityChanged {
        user: user("bob"),
        key_changed: true,
        was_verified: true,
    });
    state.on_outcome(Outcome::Done(Ok("invited carol to #lobby".to_owned())));
    let rows = screen(&state, 200, 20);
    assert!(
        rows[19].starts_with(
            " WARNING: bob's identity key changed; they were verified; compare safety numbers \
             again with `confide verify bob`  connected | alice on 127.0.0.1:5555 | invited \
             carol"
        ),
        "{}",
        rows[19]
    );
    state.on_action(Action::Dismiss);
    let rows = screen(&state, 200, 20);
    assert!(rows[19].starts_with(" connected | alice"), "{}", rows[19]);
}

#[test]
fn replies_show_what_they_answer() {
    let mut state = opened(vec![lobby()]);
    let with_id = |mut entry: confide_client::Entry, id: u8| {
        if let confide_client::Content::Message { envelope, .. } = &mut entry.content {
            envelope.id = confide_crypto::payload::MessageId::from_bytes([id; 16]);
        }
        live(entry)
    };
    let reply = |seq, to: u8, text: &str| {
        payload_message(
            1,
            seq,
            TS,
            "alice",
            confide_crypto::payload::Payload::Reply {
                to: confide_crypto::payload::MessageId::from_bytes([to; 16]),
                text: text.to_owned(),
            },
            confide_client::Protection::Mls,
        )
    };
    let long = "lunch at noon at the usual place by the river?";
    state.on_client_event(with_id(message(1, 1, TS, "bob", long), 7));
    state.on_client_event(with_id(reply(2, 7, "sure"), 8));
    // A reply to a message not loaded says so.
    state.on_client_event(with_id(reply(3, 99, "as I said"), 9));
    let text = screen(&state, 140, 12).join("\n");
    assert!(
        text.contains("alice: (re bob: lunch at noon at the usual place by the…) sure"),
        "{text}"
    );
    assert!(
        text.contains("alice: (re an earlier message) as I said"),
        "{text}"
    );
}
