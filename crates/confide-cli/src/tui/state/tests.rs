use super::*;
use crate::tui::fixtures::*;
use confide_client::model::LineKind;
use confide_client::{HistoryPage, Unreadable};
use confide_proto::MemberChange;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::time::Duration;

/// Alice with the lobby, `#dev`, an invitation to `#secret` and a conversation with
/// bob, started in the lobby.
fn started() -> AppState {
    let mut state = state();
    state.start(vec![dev(), lobby(), direct(), secret()], None);
    state
}

fn type_line(state: &mut AppState, text: &str) -> Vec<Effect> {
    for ch in text.chars() {
        let effects = state.on_action(Action::Insert(ch));
        assert!(
            effects.iter().all(|e| matches!(e, Effect::Typing { .. })),
            "{effects:?}"
        );
    }
    state.on_action(Action::Submit)
}

fn error_text(state: &AppState) -> String {
    match &state.status {
        Some(Status {
            text,
            level: Level::Error,
        }) => text.clone(),
        other => panic!("no error status: {other:?}"),
    }
}

fn ack(room: u64, seq: u64) -> SentAck {
    SentAck {
        room: RoomId(room),
        seq: Seq(seq),
        timestamp: Timestamp(TS),
    }
}

fn member_info(name: &str, online: bool) -> MemberInfo {
    MemberInfo {
        user: user(name),
        owner: false,
        online,
    }
}

#[test]
fn start_opens_the_lobby_and_fetches_what_it_shows() {
    let mut state = state();
    let effects = state.start(vec![dev(), lobby(), direct(), secret()], None);
    assert_eq!(state.rooms.selected_id(), Some(RoomId(1)));
    assert_eq!(
        effects,
        [
            Effect::Members { room: RoomId(1) },
            Effect::History {
                room: RoomId(1),
                before: None,
                limit: HISTORY_PAGE
            }
        ]
    );
    let mut state = self::state();
    let effects = state.start(vec![dev(), lobby()], Some(RoomId(4)));
    assert_eq!(state.rooms.selected_id(), Some(RoomId(4)));
    assert_eq!(effects.len(), 2);
    // An invitation shows no history and has no members to list.
    let mut state = self::state();
    assert!(state.start(vec![secret()], None).is_empty());
    assert_eq!(state.rooms.selected_id(), Some(RoomId(5)));
    assert!(self::state().start(Vec::new(), None).is_empty());
}

#[test]
fn a_message_is_pending_until_its_entry_arrives() {
    let mut state = started();
    let effects = type_line(&mut state, "hello");
    assert_eq!(
        effects,
        [Effect::Send {
            pending: 1,
            target: Target::Room(RoomId(1)),
            text: "hello".to_owned()
        }]
    );
    assert!(state.input.is_empty());
    assert_eq!(state.pending_in(RoomId(1)).count(), 1);
    assert_eq!(state.pending_in(RoomId(4)).count(), 0);

    // Acknowledged first: still shown (now with its time) until the entry comes.
    state.on_outcome(Outcome::Sent {
        pending: 1,
        result: Ok(ack(1, 13)),
    });
    assert_eq!(state.pending[0].acked, Some(ack(1, 13)));
    state.on_client_event(live(message(1, 13, TS, "alice", "hello")));
    assert!(state.pending.is_empty());
    assert_eq!(state.timeline.len(RoomId(1)), 1);

    // The entry first: the acknowledgement then just drops the pending line.
    type_line(&mut state, "again");
    state.on_client_event(live(message(1, 14, TS, "alice", "again")));
    assert_eq!(state.pending.len(), 1);
    state.on_outcome(Outcome::Sent {
        pending: 2,
        result: Ok(ack(1, 14)),
    });
    assert!(state.pending.is_empty());
    // An outcome for nothing pending changes nothing.
    assert!(
        state
            .on_outcome(Outcome::Sent {
                pending: 99,
                result: Ok(ack(1, 15))
            })
            .is_empty()
    );
}

#[test]
fn a_failed_send_says_why_and_gives_the_text_back() {
    let mut state = started();
    type_line(&mut state, "lost");
    state.on_outcome(Outcome::Sent {
        pending: 1,
        result: Err("not a member: lobby".to_owned()),
    });
    assert!(state.pending.is_empty());
    assert_eq!(error_text(&state), "not sent: not a member: lobby");
    assert_eq!(state.input.take(), "lost");

    // Not when it would now go elsewhere.
    type_line(&mut state, "elsewhere");
    state.on_action(Action::NextRoom);
    state.on_outcome(Outcome::Sent {
        pending: 2,
        result: Err("timeout".to_owned()),
    });
    assert_eq!(error_text(&state), "not sent: timeout");
    assert!(state.input.is_empty());

    // A direct message comes back as the command, so Enter retries it.
    type_line(&mut state, "/msg nobody hello");
    state.on_outcome(Outcome::Sent {
        pending: 3,
        result: Err("no such user: nobody".to_owned()),
    });
    assert_eq!(state.input.as_str(), "/msg nobody hello");
    assert_eq!(state.rooms.selected_id(), Some(RoomId(4)));
}

#[test]
fn invitations_must_be_joined_before_writing() {
    let mut state = started();
    state.rooms.select(RoomId(5));
    assert!(type_line(&mut state, "hi").is_empty());
    assert_eq!(
        error_text(&state),
        "you are invited to #secret; type /join to accept"
    );
    assert_eq!(state.input.as_str(), "hi", "the text is kept");
    state.input.take();
    assert_eq!(
        type_line(&mut state, "/join"),
        [Effect::Join {
            name: RoomName::parse("secret").unwrap()
        }]
    );
    // Accepting it opens the room and fetches its contents.
    let mut joined = secret();
    joined.membership = Membership::Joined;
    let effects = state.on_outcome(Outcome::Entered {
        verb: "joined",
        result: Ok(joined),
    });
    assert_eq!(state.status.as_ref().unwrap().text, "joined #secret");
    assert_eq!(state.rooms.selected_id(), Some(RoomId(5)));
    assert!(state.current().unwrap().is_joined());
    assert!(effects.contains(&Effect::Members { room: RoomId(5) }));
}

#[test]
fn slash_commands_become_requests_about_the_current_room() {
    let mut state = started();
    state.on_action(Action::NextRoom);
    assert_eq!(state.rooms.selected_id(), Some(RoomId(4)));
    let bob = user("bob");
    assert_eq!(
        type_line(&mut state, "/join #ops"),
        [Effect::Join {
            name: RoomName::parse("ops").unwrap()
        }]
    );
    assert_eq!(
        type_line(&mut state, "/create ops private"),
        [Effect::Create {
            name: RoomName::parse("ops").unwrap(),
            private: true
        }]
    );
    assert_eq!(
        type_line(&mut state, "/leave"),
        [Effect::Leave {
            room: RoomId(4),
            tag: "#dev".to_owned()
        }]
    );
    for (line, action) in [
        ("/invite bob", Moderation::Invite),
        ("/kick bob", Moderation::Kick),
        ("/ban bob", Moderation::Ban),
    ] {
        assert_eq!(
            type_line(&mut state, line),
            [Effect::Moderate {
                action,
                room: RoomId(4),
                tag: "#dev".to_owned(),
                user: bob.clone()
            }]
        );
    }
    assert_eq!(
        type_line(&mut state, "/rooms"),
        [Effect::Rooms { show: true }]
    );
    assert!(type_line(&mut state, "/help").is_empty());
    assert_eq!(state.overlay.as_ref().unwrap().title, "help");
    // Esc closes the window first, then clears the status line.
    state.status = Some(Status {
        text: "x".to_owned(),
        level: Level::Info,
    });
    state.on_action(Action::Dismiss);
    assert!(state.overlay.is_none());
    assert!(state.status.is_some());
    state.on_action(Action::Dismiss);
    assert!(state.status.is_none());

    // Errors go to the status line, and the line stays for fixing.
    assert!(type_line(&mut state, "/frob").is_empty());
    assert_eq!(
        error_text(&state),
        "unknown command /frob; /help lists the commands"
    );
    assert_eq!(state.input.take(), "/frob");
    assert!(type_line(&mut state, "/join").is_empty());
    assert_eq!(error_text(&state), "usage: /join ROOM");
    state.rooms.select(RoomId(5));
    assert!(type_line(&mut state, "/kick bob").is_empty());
    assert_eq!(error_text(&state), "you are not a member of #secret");

    assert!(type_line(&mut state, "/quit").is_empty());
    assert!(state.quit);
}

#[test]
fn request_outcomes_show_in_the_status_line() {
    let mut state = started();
    state.on_outcome(Outcome::Done(Ok("kicked bob from #dev".to_owned())));
    assert_eq!(state.status.as_ref().unwrap().text, "kicked bob from #dev");
    state.on_outcome(Outcome::Done(Err("forbidden: not the owner".to_owned())));
    assert_eq!(error_text(&state), "forbidden: not the owner");
    state.on_outcome(Outcome::Entered {
        verb: "created",
        result: Err("room exists: ops".to_owned()),
    });
    assert_eq!(error_text(&state), "room exists: ops");
    state.on_outcome(Outcome::Members {
        room: RoomId(1),
        result: Err("timeout".to_owned()),
    });
    assert_eq!(error_text(&state), "cannot list members: timeout");

    let listing = vec![lobby(), dev(), direct(), secret()];
    state.on_outcome(Outcome::Rooms {
        show: true,
        result: Ok(listing),
    });
    let overlay = state.overlay.as_ref().unwrap();
    assert_eq!(overlay.title, "rooms");
    assert_eq!(overlay.lines.len(), 4);
    assert!(overlay.lines[0].starts_with("#lobby"));
}

#[test]
fn msg_opens_or_creates_the_direct_conversation() {
    let mut state = started();
    // An existing conversation: switch to it and send there.
    let effects = type_line(&mut state, "/msg bob psst");
    assert_eq!(state.rooms.selected_id(), Some(RoomId(9)));
    assert!(effects.contains(&Effect::Send {
        pending: 1,
        target: Target::Room(RoomId(9)),
        text: "psst".to_owned()
    }));

    // A new one: send to the user; switch once the conversation exists.
    let effects = type_line(&mut state, "/msg carol hello there");
    assert_eq!(
        effects,
        [Effect::Send {
            pending: 2,
            target: Target::User("carol".to_owned()),
            text: "hello there".to_owned()
        }]
    );
    assert_eq!(state.rooms.selected_id(), Some(RoomId(9)));
    let carol = RoomInfo {
        id: RoomId(12),
        name: None,
        kind: confide_proto::RoomKind::Direct {
            peer: user("carol"),
        },
        owner: None,
        membership: Membership::Joined,
        last_seq: Seq(0),
        member_count: 2,
        encryption: confide_proto::RoomEncryption::Mls,
        epoch: None,
    };
    state.on_client_event(ClientEvent::Room(carol.clone()));
    assert_eq!(state.rooms.selected_id(), Some(RoomId(12)));
    assert_eq!(
        state.pending_in(RoomId(12)).count(),
        1,
        "shown while pending"
    );
    state.on_outcome(Outcome::Sent {
        pending: 2,
        result: Ok(ack(12, 1)),
    });
    assert_eq!(state.rooms.selected_id(), Some(RoomId(12)));

    // The acknowledgement may come before the room event does.
    let mut state = started();
    type_line(&mut state, "/msg carol hi");
    state.on_outcome(Outcome::Sent {
        pending: 1,
        result: Ok(ack(12, 1)),
    });
    assert_eq!(state.rooms.selected_id(), Some(RoomId(1)));
    state.on_client_event(ClientEvent::Room(carol));
    assert_eq!(state.rooms.selected_id(), Some(RoomId(12)));
}

#[test]
fn switching_rooms_clears_unread_and_fetches_once() {
    let mut state = started();
    state.on_client_event(live(message(4, 7, TS, "bob", "in dev")));
    state.on_client_event(live(message(4, 8, TS, "bob", "more")));
    assert_eq!(state.rooms.get(RoomId(4)).unwrap().unread, 2);
    let effects = state.on_action(Action::NextRoom);
    assert_eq!(state.rooms.selected_id(), Some(RoomId(4)));
    assert_eq!(state.rooms.get(RoomId(4)).unwrap().unread, 0);
    assert_eq!(
        effects,
        [
            Effect::Members { room: RoomId(4) },
            Effect::History {
                room: RoomId(4),
                before: Some(Seq(7)),
                limit: HISTORY_PAGE
            }
        ]
    );
    // Back and forth again while the requests are in flight: no duplicates.
    state.on_action(Action::PreviousRoom);
    assert!(state.on_action(Action::NextRoom).is_empty());
    state.on_outcome(Outcome::Members {
        room: RoomId(4),
        result: Ok(vec![member_info("alice", true), member_info("bob", false)]),
    });
    state.on_outcome(Outcome::History {
        room: RoomId(4),
        result: Ok(HistoryPage {
            entries: Vec::new(),
            more: false,
        }),
    });
    state.on_action(Action::PreviousRoom);
    assert!(state.on_action(Action::NextRoom).is_empty(), "nothing left");
    assert_eq!(state.presence.online(RoomId(4)).count(), 1);
    // Wrapping around from the last room to the first.
    state.on_action(Action::NextRoom);
    state.on_action(Action::NextRoom);
    assert_eq!(state.rooms.selected_id(), Some(RoomId(9)));
    state.on_action(Action::NextRoom);
    assert_eq!(state.rooms.selected_id(), Some(RoomId(1)));
}

fn fill(state: &mut AppState, room: u64, seqs: std::ops::RangeInclusive<u64>) {
    for seq in seqs {
        state.on_client_event(live(message(room, seq, TS, "bob", &format!("line {seq}"))));
    }
}

#[test]
fn page_up_scrolls_and_loads_older_history_at_the_top() {
    let mut state = started();
    // 100x20: the conversation shows 16 rows; 40 lines plus a day separator.
    fill(&mut state, 1, 60..=99);
    // The start asked for history already; let it answer with nothing new.
    state.on_outcome(Outcome::History {
        room: RoomId(1),
        result: Ok(HistoryPage {
            entries: Vec::new(),
            more: true,
        }),
    });
    assert!(state.on_action(Action::PageUp).is_empty());
    assert_eq!(state.scroll, 15);
    // Reaching the top (41 rows, 16 shown) asks for older entries.
    assert_eq!(
        state.on_action(Action::PageUp),
        [Effect::History {
            room: RoomId(1),
            before: Some(Seq(60)),
            limit: HISTORY_PAGE
        }]
    );
    assert_eq!(state.scroll, 25);
    assert!(state.loading_history(RoomId(1)));
    assert!(
        state.on_action(Action::PageUp).is_empty(),
        "one request at a time"
    );
    let older: Vec<_> = (40..60)
        .map(|seq| message(1, seq, TS, "carol", "older"))
        .collect();
    state.on_outcome(Outcome::History {
        room: RoomId(1),
        result: Ok(HistoryPage {
            entries: older,
            more: false,
        }),
    });
    assert_eq!(state.timeline.len(RoomId(1)), 60);
    assert_eq!(state.scroll, 25, "the view stays where it was");
    assert!(state.on_action(Action::PageUp).is_empty());
    assert_eq!(state.scroll, 40);
    state.on_action(Action::PageUp);
    assert_eq!(state.scroll, 45);
    assert!(
        state.on_action(Action::PageUp).is_empty(),
        "the server said there is nothing older"
    );
    state.on_action(Action::PageDown);
    assert_eq!(state.scroll, 30);
    // New lines below do not move what is on screen.
    fill(&mut state, 1, 100..=101);
    assert_eq!(state.scroll, 32);
    // Switching rooms returns to the newest line.
    state.on_action(Action::NextRoom);
    assert_eq!(state.scroll, 0);
    state.on_action(Action::PageDown);
    assert_eq!(state.scroll, 0);
}

#[test]
fn history_errors_show_and_allow_a_retry() {
    let mut state = started();
    state.on_outcome(Outcome::History {
        room: RoomId(1),
        result: Err("no answer to history after 60s".to_owned()),
    });
    assert_eq!(
        error_text(&state),
        "cannot load history: no answer to history after 60s"
    );
    assert!(!state.loading_history(RoomId(1)));
    assert_eq!(state.on_action(Action::PageUp).len(), 1);
}

#[test]
fn connection_events_update_the_status() {
    let mut state = started();
    state.on_outcome(Outcome::Members {
        room: RoomId(1),
        result: Ok(vec![member_info("alice", true)]),
    });
    assert!(state.syncing);
    state.on_client_event(ClientEvent::SyncComplete);
    assert!(!state.syncing);
    state.on_client_event(ClientEvent::Connection(ConnectionState::Reconnecting {
        attempt: 3,
        retry_in: Duration::from_secs(2),
    }));
    assert!(matches!(
        state.connection,
        ConnectionState::Reconnecting { attempt: 3, .. }
    ));
    // Back: presence may have changed meanwhile, so the members are fetched again.
    let effects = state.on_client_event(ClientEvent::Connection(ConnectionState::Connected));
    assert_eq!(state.connection, ConnectionState::Connected);
    assert!(state.syncing);
    assert!(effects.contains(&Effect::Members { room: RoomId(1) }));
    state.on_client_event(ClientEvent::Warning("3 entries were skipped".to_owned()));
    assert_eq!(
        state.status,
        Some(Status {
            text: "3 entries were skipped".to_owned(),
            level: Level::Warning
        })
    );
}

#[test]
fn room_events_add_invitations_and_removals_move_the_selection() {
    let mut state = started();
    state.on_action(Action::NextRoom);
    assert_eq!(state.rooms.selected_id(), Some(RoomId(4)));
    let mut ops = named(
        6,
        "ops",
        confide_proto::RoomKind::Private,
        Membership::Invited,
    );
    state.on_client_event(ClientEvent::Room(ops.clone()));
    assert!(state.rooms.get(RoomId(6)).unwrap().is_invitation());
    assert_eq!(
        state.status.as_ref().unwrap().text,
        "you are invited to #ops; open it and type /join to accept"
    );
    ops.membership = Membership::None;
    state.on_client_event(ClientEvent::Room(ops));
    assert!(state.rooms.get(RoomId(6)).is_none());

    state.on_client_event(live(member_entry(
        4,
        3,
        "alice",
        "alice",
        MemberChange::Kicked,
    )));
    let mut gone = dev();
    gone.membership = Membership::None;
    let effects = state.on_client_event(ClientEvent::Room(gone));
    assert_eq!(state.rooms.selected_id(), Some(RoomId(1)));
    assert_eq!(
        state.status.as_ref().unwrap().text,
        "you are no longer in #dev"
    );
    assert_eq!(state.timeline.len(RoomId(4)), 0);
    assert!(
        effects.is_empty(),
        "the lobby's requests are still in flight"
    );
}

#[test]
fn entries_of_unknown_rooms_refresh_the_list_once() {
    let mut state = started();
    assert_eq!(
        state.on_client_event(live(message(30, 1, TS, "bob", "?"))),
        [Effect::Rooms { show: false }]
    );
    assert!(
        state
            .on_client_event(live(message(30, 2, TS, "bob", "?")))
            .is_empty()
    );
    let mut listing = vec![lobby(), dev(), direct(), secret()];
    listing.push(named(
        30,
        "new",
        confide_proto::RoomKind::Public,
        Membership::Joined,
    ));
    state.on_outcome(Outcome::Rooms {
        show: false,
        result: Ok(listing),
    });
    assert!(state.overlay.is_none());
    assert!(state.rooms.get(RoomId(30)).is_some());
    assert_eq!(
        state.on_client_event(live(message(31, 1, TS, "bob", "?"))),
        [Effect::Rooms { show: false }]
    );
}

#[test]
fn terminal_events_reach_the_state() {
    let mut state = started();
    state.on_terminal_event(Event::Key(KeyEvent::new(
        KeyCode::Char('h'),
        KeyModifiers::NONE,
    )));
    state.on_terminal_event(Event::Paste("ey\r\nyou".to_owned()));
    assert_eq!(state.input.as_str(), "hey\nyou");
    state.on_terminal_event(Event::Resize(120, 40));
    assert_eq!(state.size, (120, 40));
    assert_eq!(
        state.on_terminal_event(Event::Key(KeyEvent::new(
            KeyCode::Char('l'),
            KeyModifiers::CONTROL
        ))),
        [Effect::ClearScreen]
    );
    state.on_terminal_event(Event::Key(KeyEvent::new(
        KeyCode::Char('c'),
        KeyModifiers::CONTROL,
    )));
    assert!(state.quit);
}

#[test]
fn unreadable_messages_become_lines_that_say_why() {
    let mut state = started();
    state.on_client_event(live(unreadable_entry(
        1,
        3,
        TS,
        "mallory",
        Unreadable::Replayed,
    )));
    state.on_outcome(Outcome::History {
        room: RoomId(1),
        result: Ok(HistoryPage {
            entries: vec![unreadable_entry(1, 1, TS, "bob", Unreadable::BeforeJoin)],
            more: false,
        }),
    });
    let kinds: Vec<&LineKind> = state
        .timeline
        .lines(RoomId(1))
        .map(|line| &line.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            &LineKind::Unreadable {
                reason: Unreadable::BeforeJoin
            },
            &LineKind::Unreadable {
                reason: Unreadable::Replayed
            },
        ]
    );
}

#[test]
fn identity_changes_warn_and_verified_ones_stay_until_dismissed() {
    let mut state = started();
    state.on_client_event(ClientEvent::IdentityChanged {
        user: user("bob"),
        key_changed: false,
        was_verified: false,
    });
    assert_eq!(
        state.status,
        Some(Status {
            text: "bob's list of devices changed".to_owned(),
            level: Level::Warning
        })
    );
    assert_eq!(state.alert, None);
    state.on_client_event(ClientEvent::IdentityChanged {
        user: user("carol"),
        key_changed: true,
        was_verified: false,
    });
    let status = state.status.clone().unwrap();
    assert_eq!(status.level, Level::Warning);
    assert!(
        status
            .text
            .starts_with("carol's identity key changed (a reinstall"),
        "{status:?}"
    );
    assert_eq!(state.alert, None);

    // A verified user's new identity key: loud, and kept past routine messages.
    state.on_client_event(ClientEvent::IdentityChanged {
        user: user("bob"),
        key_changed: true,
        was_verified: true,
    });
    let alert = "bob's identity key changed; they were verified; compare safety numbers \
                 again with `confide verify bob`";
    assert_eq!(state.alert.as_deref(), Some(alert));
    state.on_outcome(Outcome::Done(Ok("left #dev".to_owned())));
    state.on_client_event(ClientEvent::Warning("3 entries were skipped".to_owned()));
    assert_eq!(state.alert.as_deref(), Some(alert));
    // Esc dismisses the alert first, then the status message.
    state.on_action(Action::Dismiss);
    assert_eq!(state.alert, None);
    assert!(state.status.is_some());
    state.on_action(Action::Dismiss);
    assert!(state.status.is_none());
}

#[test]
fn writing_a_message_says_typing_and_clearing_or_leaving_the_room_stops_it() {
    let mut state = started();
    let typing = |room: u64, active: bool| Effect::Typing {
        room: RoomId(room),
        active,
    };
    assert_eq!(state.on_action(Action::Insert('h')), [typing(1, true)]);
    // Each edit asks again; the client core decides how often a notice goes out.
    assert_eq!(state.on_action(Action::Insert('i')), [typing(1, true)]);
    assert_eq!(state.on_action(Action::Backspace), [typing(1, true)]);
    assert_eq!(state.on_action(Action::Backspace), [typing(1, false)]);
    assert!(
        state.on_action(Action::Backspace).is_empty(),
        "nothing changed"
    );
    // Commands are not messages.
    assert!(state.on_action(Action::Insert('/')).is_empty());
    assert!(state.on_action(Action::Insert('j')).is_empty());
    state.input.take();
    // Switching rooms stops typing in the old one.
    state.on_action(Action::Insert('x'));
    let effects = state.on_action(Action::NextRoom);
    assert_eq!(effects[0], typing(1, false));
    let here = state.rooms.selected_id().unwrap();
    assert!(effects.contains(&Effect::Typing {
        room: here,
        active: true
    }));
    // Sending ends typing without a stop notice.
    let effects = state.on_action(Action::Submit);
    assert!(effects.iter().all(|e| !matches!(e, Effect::Typing { .. })));
    assert!(
        state
            .on_action(Action::Insert('y'))
            .contains(&Effect::Typing {
                room: here,
                active: true
            })
    );
}

#[test]
fn others_typing_shows_for_the_current_room_until_it_runs_out() {
    let mut state = started();
    let start = std::time::Instant::now();
    state.on_tick(start);
    state.on_client_event(ClientEvent::Typing {
        room: RoomId(1),
        user: user("bob"),
        active: true,
    });
    state.on_client_event(ClientEvent::Typing {
        room: RoomId(4),
        user: user("carol"),
        active: true,
    });
    assert_eq!(state.typing_line().as_deref(), Some("bob is typing…"));
    state.on_tick(start + confide_client::model::TYPING_SHOWN_FOR);
    assert_eq!(state.typing_line(), None);
}

fn file_pointer(name: &str, size: u64) -> FilePointer {
    FilePointer {
        blob: "00".repeat(16),
        name: name.to_owned(),
        size,
        mime: "application/octet-stream".to_owned(),
        sha256: [7; 32],
        key: confide_crypto::payload::FileKey::from_bytes([9; 32]),
        chunk_size: 65_536,
    }
}

/// Started, in `#dev` with two files (the older from bob, the newer from carol) and a
/// text between them.
fn with_files() -> AppState {
    let mut state = started();
    state.on_action(Action::NextRoom);
    assert_eq!(state.rooms.selected_id(), Some(RoomId(4)));
    let file = |seq, sender, name, size| {
        live(payload_message(
            4,
            seq,
            TS + i64::try_from(seq).unwrap() * 60_000,
            sender,
            confide_crypto::payload::Payload::File(file_pointer(name, size)),
            confide_client::Protection::Mls,
        ))
    };
    state.on_client_event(file(1, "bob", "old plan.pdf", 2048));
    state.on_client_event(live(message(4, 2, TS, "bob", "see above")));
    state.on_client_event(file(3, "carol", "new\u{7}plan.pdf", 3 << 20));
    state
}

#[test]
fn file_commands_send_list_and_save_in_the_current_conversation() {
    let mut state = with_files();
    assert_eq!(
        type_line(&mut state, "/file ~/notes and such.txt"),
        [Effect::SendFile {
            target: Target::Room(RoomId(4)),
            path: PathBuf::from("~/notes and such.txt"),
        }]
    );
    // /files numbers them newest first, with names made safe to show.
    assert!(type_line(&mut state, "/files").is_empty());
    let overlay = state.overlay.clone().unwrap();
    assert_eq!(overlay.title, "files in #dev");
    assert_eq!(overlay.lines.len(), 2);
    assert!(
        overlay.lines[0].starts_with("  1  newplan.pdf (3.0 MiB) from carol"),
        "{overlay:?}"
    );
    assert!(
        overlay.lines[1].starts_with("  2  old plan.pdf (2.0 KiB) from bob"),
        "{overlay:?}"
    );
    // /save alone saves the newest; a number picks one; the rest is where.
    assert_eq!(
        type_line(&mut state, "/save"),
        [Effect::SaveFile {
            pointer: Box::new(file_pointer("new\u{7}plan.pdf", 3 << 20)),
            out: None,
        }]
    );
    assert_eq!(
        type_line(&mut state, "/save 2 saved/it.pdf"),
        [Effect::SaveFile {
            pointer: Box::new(file_pointer("old plan.pdf", 2048)),
            out: Some(PathBuf::from("saved/it.pdf")),
        }]
    );
    assert!(type_line(&mut state, "/save 3").is_empty());
    assert_eq!(error_text(&state), "there is no file 3: /files lists 2");
    // Progress and the result show on the status line.
    state.on_outcome(Outcome::Progress {
        verb: "saving",
        name: "old plan.pdf".to_owned(),
        done: 1024,
        total: 2048,
    });
    assert_eq!(
        state.status.as_ref().unwrap().text,
        "saving old plan.pdf: 50% of 2.0 KiB"
    );
}

#[test]
fn file_commands_need_a_joined_conversation_with_files() {
    let mut state = started();
    // The lobby has no files loaded yet and more history to load.
    assert!(type_line(&mut state, "/save").is_empty());
    assert_eq!(
        error_text(&state),
        "no files loaded here (PageUp loads older messages)"
    );
    assert!(type_line(&mut state, "/files").is_empty());
    assert_eq!(
        state.overlay.as_ref().unwrap().lines,
        ["no files loaded here (PageUp loads older messages)"]
    );
    // An invitation is not a conversation to send files to.
    while state.rooms.selected_id() != Some(RoomId(5)) {
        state.on_action(Action::NextRoom);
    }
    assert!(type_line(&mut state, "/file a.txt").is_empty());
    assert_eq!(error_text(&state), "you are not a member of #secret");
}

/// A message of `#dev` with its own id.
fn with_id(mut entry: confide_client::Entry, id: u8) -> ClientEvent {
    if let confide_client::Content::Message { envelope, .. } = &mut entry.content {
        envelope.id = MessageId::from_bytes([id; 16]);
    }
    live(entry)
}

#[test]
fn delete_takes_the_users_newest_message_or_one_of_their_files() {
    let mut state = with_files();
    // Nothing of alice's is here yet.
    assert!(type_line(&mut state, "/delete").is_empty());
    assert_eq!(
        error_text(&state),
        "none of your messages here can be deleted"
    );
    let report = file_pointer("report.pdf", 4096);
    state.on_client_event(with_id(message(4, 4, TS, "alice", "mine"), 1));
    state.on_client_event(with_id(
        payload_message(
            4,
            5,
            TS,
            "alice",
            confide_crypto::payload::Payload::File(report.clone()),
            confide_client::Protection::Mls,
        ),
        2,
    ));
    // The newest is her file: the message goes, and the file with it.
    let delete_file = Effect::Delete {
        room: RoomId(4),
        target: MessageId::from_bytes([2; 16]),
        file: Some(Box::new(report)),
    };
    assert_eq!(
        type_line(&mut state, "/delete"),
        std::slice::from_ref(&delete_file)
    );
    assert_eq!(type_line(&mut state, "/delete 1"), [delete_file]);
    // Others' files are theirs to delete.
    assert!(type_line(&mut state, "/delete 3").is_empty());
    assert_eq!(
        error_text(&state),
        "file 3 was sent by bob: only its sender can delete it"
    );
    assert!(type_line(&mut state, "/delete 4").is_empty());
    assert_eq!(error_text(&state), "there is no file 4: /files lists 3");
    // Once the file is deleted, /delete takes the text before it.
    state.on_client_event(with_id(
        payload_message(
            4,
            6,
            TS,
            "alice",
            confide_crypto::payload::Payload::Delete {
                target: MessageId::from_bytes([2; 16]),
            },
            confide_client::Protection::Mls,
        ),
        3,
    ));
    assert_eq!(
        type_line(&mut state, "/delete"),
        [Effect::Delete {
            room: RoomId(4),
            target: MessageId::from_bytes([1; 16]),
            file: None,
        }]
    );
}

#[test]
fn edit_replaces_the_text_of_the_users_newest_message() {
    let mut state = with_files();
    assert!(type_line(&mut state, "/edit hi").is_empty());
    assert_eq!(
        error_text(&state),
        "none of your messages here can be edited"
    );
    state.on_client_event(with_id(message(4, 4, TS, "alice", "see you at 4"), 1));
    assert_eq!(
        type_line(&mut state, "/edit see you at 5"),
        [Effect::Edit {
            room: RoomId(4),
            target: MessageId::from_bytes([1; 16]),
            text: "see you at 5".to_owned(),
        }]
    );
    // Files and voice messages have no text to edit.
    state.on_client_event(with_id(
        payload_message(
            4,
            5,
            TS,
            "alice",
            confide_crypto::payload::Payload::File(file_pointer("a.txt", 10)),
            confide_client::Protection::Mls,
        ),
        2,
    ));
    assert!(type_line(&mut state, "/edit x").is_empty());
    assert_eq!(
        error_text(&state),
        "your last message here is a file: it cannot be edited"
    );
}

#[test]
fn reply_and_react_answer_the_newest_message_of_someone_else() {
    let mut state = started();
    state.on_action(Action::NextRoom);
    assert_eq!(state.rooms.selected_id(), Some(RoomId(4)));
    assert!(type_line(&mut state, "/reply hi").is_empty());
    assert!(error_text(&state).starts_with("nothing to answer here yet"));
    assert!(type_line(&mut state, "/react 👍").is_empty());
    state.on_client_event(with_id(message(4, 1, TS, "bob", "lunch at noon?"), 7));
    // The user's own messages are not answered.
    state.on_client_event(with_id(message(4, 2, TS, "alice", "maybe"), 8));
    let lunch = MessageId::from_bytes([7; 16]);
    assert_eq!(
        type_line(&mut state, "/reply sure, at 12"),
        [Effect::Reply {
            room: RoomId(4),
            to: lunch,
            text: "sure, at 12".to_owned(),
        }]
    );
    let react = |emoji: &str, add| Effect::React {
        room: RoomId(4),
        target: lunch,
        emoji: emoji.to_owned(),
        add,
    };
    assert_eq!(type_line(&mut state, "/react 👍"), [react("👍", true)]);
    // Once the user's reaction is in, the same command takes it back.
    state.on_client_event(with_id(
        payload_message(
            4,
            3,
            TS,
            "alice",
            confide_crypto::payload::Payload::Reaction {
                target: lunch,
                emoji: "👍".to_owned(),
                add: true,
            },
            confide_client::Protection::Mls,
        ),
        9,
    ));
    assert_eq!(type_line(&mut state, "/react 👍"), [react("👍", false)]);
    assert_eq!(type_line(&mut state, "/react 🎉"), [react("🎉", true)]);
    // A deleted message is not answered: the one before it is.
    state.on_client_event(with_id(message(4, 4, TS, "carol", "wrong room"), 10));
    state.on_client_event(with_id(
        payload_message(
            4,
            5,
            TS,
            "carol",
            confide_crypto::payload::Payload::Delete {
                target: MessageId::from_bytes([10; 16]),
            },
            confide_client::Protection::Mls,
        ),
        11,
    ));
    assert_eq!(type_line(&mut state, "/react 👍"), [react("👍", false)]);
}
