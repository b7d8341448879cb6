//! The desktop app driven through its accessibility tree (egui_kittest), against a real
//! server over loopback TLS, with a second, real client on the other side.

use confide_client::{
    Auth, Client, ClientConfig, ClientEvent, ClientHandle, EventStream, Fingerprint, Profile,
};
use confide_crypto::payload::Payload;
use confide_gui::ConfideApp;
use confide_proto::{Password, RoomId, Target, UserName};
use confide_testkit::{TIMEOUT, TestServer, next_entry};
use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT as _, Queryable as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

type App<'a> = Harness<'a, ConfideApp>;

/// The app with its profile in `profile`, remembering `server` and `user` (so the form
/// starts filled in, as after an earlier login).
fn app_for<'a>(profile: &Path, server: &str, user: &str) -> App<'a> {
    std::fs::create_dir_all(profile).unwrap();
    std::fs::write(
        profile.join("gui.json"),
        format!(r#"{{"server": "{server}", "username": "{user}"}}"#),
    )
    .unwrap();
    let app = ConfideApp::new(profile.to_path_buf()).unwrap();
    Harness::builder()
        .with_size(egui::Vec2::new(1000.0, 700.0))
        .build_ui_state(|ui, app: &mut ConfideApp| app.show(ui), app)
}

/// Steps the app until `done` holds (bounded by the test timeout).
fn wait_until(harness: &mut App<'_>, what: &str, mut done: impl FnMut(&App<'_>) -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        harness.step();
        if done(harness) {
            return;
        }
        if Instant::now() >= deadline {
            let shown: Vec<String> = harness
                .query_all_by_label_contains("")
                .filter_map(|node| node.accesskit_node().label())
                .collect();
            panic!("timed out waiting for {what}; the window shows {shown:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Compares the window with `tests/snapshots/NAME.png` (rendered by wgpu on the
/// software Vulkan driver the setup script installs). Times, ports and fingerprints
/// differ between runs, so a few thousand pixels may differ; a broken layout differs in
/// far more. `UPDATE_SNAPSHOTS=1` rewrites the files.
fn snapshot(harness: &mut App<'_>, name: &str) {
    harness.run_steps(2);
    let options = egui_kittest::SnapshotOptions::new()
        .threshold(1.0)
        .max_failed_pixels(12_000usize);
    harness.snapshot_options(name, &options);
}

fn has_label(harness: &App<'_>, text: &str) -> bool {
    harness.query_all_by_label_contains(text).next().is_some()
}

/// Types `text` into the message input (focusing it first).
fn type_message(harness: &mut App<'_>, text: &str) {
    harness.get_by_label("Message").focus();
    harness.step();
    harness.get_by_label("Message").type_text(text);
    harness.step();
}

/// Types `text` into the message input and presses Enter.
fn send_message(harness: &mut App<'_>, text: &str) {
    type_message(harness, text);
    harness.key_press(egui::Key::Enter);
    harness.step();
}

/// Types the password and presses a button of the start screen.
fn submit(harness: &mut App<'_>, password: &str, button: &str) {
    harness.get_by_label("Password").focus();
    harness.step();
    harness.get_by_label("Password").type_text(password);
    harness.step();
    harness.get_by_label(button).click();
    harness.step();
}

async fn register(server: &TestServer, profile: &Path, name: &str) -> (ClientHandle, EventStream) {
    let config = ClientConfig::new(
        server.address().parse().unwrap(),
        Profile::open(profile).unwrap(),
        Auth::Register {
            username: UserName::parse(name).unwrap(),
            password: Password(format!("{name} password")),
        },
    )
    .sync(true);
    let (client, events) = Client::connect(config).await.unwrap();
    client.keys_published().await.unwrap();
    (client, events)
}

async fn next_text(events: &mut EventStream, room: RoomId, from: &str) -> String {
    loop {
        let event = tokio::time::timeout(TIMEOUT, events.next())
            .await
            .expect("timed out waiting for a message")
            .expect("stream ended");
        if let ClientEvent::Entry { entry, .. } = event
            && entry.room == room
            && entry.sender.as_str() == from
            && let Some(text) = entry.text()
        {
            return text.to_owned();
        }
    }
}

fn lobby(harness: &App<'_>) -> RoomId {
    let chat = harness.state().chat().expect("connected");
    chat.rooms().lobby().expect("a lobby").id()
}

#[test]
fn first_contact_asks_to_trust_then_chats_with_emoji_shortcodes() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start()).unwrap();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut harness = app_for(dirs.0.path(), &server.address(), "alice");

    // A server never seen: its fingerprint is shown before anything is sent.
    submit(&mut harness, "alice password", "Create account");
    wait_until(&mut harness, "the trust prompt", |h| {
        has_label(h, "Trust this server?")
    });
    let shown = Fingerprint(server.fingerprint).to_string();
    assert!(
        has_label(&harness, &shown),
        "the fingerprint {shown} is shown"
    );
    snapshot(&mut harness, "trust_prompt");
    harness.get_by_label("Trust and connect").click_accesskit();
    wait_until(&mut harness, "the chat screen", |h| {
        h.state().is_connected()
    });
    wait_until(&mut harness, "the connection indicator", |h| {
        has_label(h, "Connected")
    });
    assert!(has_label(&harness, "alice on "));
    let lobby = lobby(&harness);

    // Bob, a real client, writes in the lobby; alice's window shows it.
    let (bob, mut bob_events) = runtime.block_on(register(&server, dirs.1.path(), "bob"));
    runtime
        .block_on(bob.send_text(Target::Room(lobby), "hi alice"))
        .unwrap();
    wait_until(&mut harness, "bob's message", |h| has_label(h, "hi alice"));
    assert!(has_label(&harness, "bob:"));
    assert!(has_label(&harness, "end-to-end encrypted (MLS)"));

    // Alice answers with a shortcode, which becomes the emoji as she types; Enter sends.
    type_message(&mut harness, "hello :smile:");
    harness.step();
    assert_eq!(
        harness.get_by_label("Message").value().as_deref(),
        Some("hello 😄")
    );
    harness.key_press(egui::Key::Enter);
    harness.step();
    let (got, id) = runtime.block_on(text_from(&mut bob_events, lobby, "alice"));
    assert_eq!(got, "hello 😄");
    wait_until(&mut harness, "the input to clear", |h| {
        h.get_by_label("Message").value().as_deref() == Some("")
    });
    // Bob's client confirmed delivery by itself; once he reads it, it shows as read.
    wait_until(&mut harness, "delivered", |h| has_label(h, "delivered"));
    assert!(runtime.block_on(bob.mark_read(lobby, id)).unwrap());
    wait_until(&mut harness, "read", |h| {
        h.query_by_label("read").is_some() && !has_label(h, "delivered")
    });

    // The server and user are remembered for next time.
    let remembered = std::fs::read_to_string(dirs.0.path().join("gui.json")).unwrap();
    assert!(remembered.contains(&server.address()) && remembered.contains("alice"));
    harness.state_mut().shut_down();
    runtime.block_on(bob.close());
}

#[test]
fn a_changed_certificate_is_a_blocking_warning_with_both_fingerprints() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The profile pinned another certificate for this address.
    let profile = Profile::open(dir.path()).unwrap();
    let pinned = Fingerprint([7; 32]);
    profile
        .pin_server(&server.address().parse().unwrap(), pinned)
        .unwrap();
    let mut harness = app_for(dir.path(), &server.address(), "alice");
    submit(&mut harness, "alice password", "Log in");
    wait_until(&mut harness, "the warning", |h| {
        has_label(h, "WARNING: the server's certificate changed")
    });
    assert!(has_label(&harness, &pinned.to_string()));
    assert!(has_label(
        &harness,
        &Fingerprint(server.fingerprint).to_string()
    ));
    assert!(!harness.state().is_connected());
    // Cancel leaves it untrusted: the pin stays.
    harness.get_by_label("Cancel").click_accesskit();
    wait_until(&mut harness, "the form", |h| {
        !has_label(h, "WARNING: the server's certificate changed")
    });
    assert_eq!(
        profile
            .known_server(&server.address().parse().unwrap())
            .unwrap(),
        Some(pinned)
    );
}

#[test]
fn the_connection_indicator_shows_reconnecting_and_recovers_after_a_restart() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut server = runtime.block_on(TestServer::start()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Known server (pinned by an earlier login), so no prompt this time.
    Profile::open(dir.path())
        .unwrap()
        .pin_server(
            &server.address().parse().unwrap(),
            Fingerprint(server.fingerprint),
        )
        .unwrap();
    let mut harness = app_for(dir.path(), &server.address(), "carol");
    submit(&mut harness, "carol password", "Create account");
    wait_until(&mut harness, "the chat screen", |h| {
        h.state().is_connected()
    });
    wait_until(&mut harness, "connected", |h| has_label(h, "Connected"));

    // The restarted server keeps its data directory and so its certificate.
    runtime.block_on(server.stop()).unwrap();
    wait_until(&mut harness, "reconnecting", |h| {
        has_label(h, "Reconnecting")
    });
    runtime.block_on(server.restart()).unwrap();
    wait_until(&mut harness, "connected again", |h| {
        has_label(h, "Connected")
    });
    harness.get_by_label("Disconnect").click();
    wait_until(&mut harness, "the start screen", |h| {
        !h.state().is_connected() && has_label(h, "Log in")
    });
    // The form remembers who logged in last.
    assert_eq!(
        harness.get_by_label("User name").value().as_deref(),
        Some("carol")
    );
}

/// Registers alice in the app (trusting the new server) and waits for the chat screen.
fn register_in_app(harness: &mut App<'_>) {
    submit(harness, "alice password", "Create account");
    wait_until(harness, "the trust prompt", |h| {
        has_label(h, "Trust this server?")
    });
    harness.get_by_label("Trust and connect").click_accesskit();
    wait_until(harness, "the chat screen", |h| h.state().is_connected());
}

#[test]
fn a_private_conversation_with_the_emoji_picker_and_verification() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start()).unwrap();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (bob, mut bob_events) = runtime.block_on(register(&server, dirs.1.path(), "bob"));
    let mut harness = app_for(dirs.0.path(), &server.address(), "alice");
    register_in_app(&mut harness);

    // Bob is online in the lobby: clicking him opens a private conversation.
    wait_until(&mut harness, "bob in the people list", |h| {
        h.query_by_label("bob").is_some()
    });
    harness.get_by_label("bob").click();
    wait_until(&mut harness, "the conversation with bob", |h| {
        h.state()
            .chat()
            .and_then(|chat| chat.rooms().selected())
            .is_some_and(|room| room.label() == "@bob")
    });

    // The picker: search, click, and the emoji lands in the input (and is remembered).
    harness.get_by_label("😀 Emoji").click();
    wait_until(&mut harness, "the picker", |h| {
        h.query_by_label("Search emoji").is_some()
    });
    harness.get_by_label("Search emoji").focus();
    harness.step();
    harness
        .get_by_label("Search emoji")
        .type_text("party popper");
    wait_until(&mut harness, "the search result", |h| {
        h.query_by_label("🎉").is_some()
    });
    harness.get_by_label("🎉").click_accesskit();
    wait_until(&mut harness, "the emoji in the input", |h| {
        h.get_by_label("Message").value().as_deref() == Some("🎉")
    });
    let recent = std::fs::read_to_string(dirs.0.path().join("recent-emoji.json")).unwrap();
    assert!(recent.contains("🎉"));
    send_message(&mut harness, " for you");
    let direct = harness
        .state()
        .chat()
        .unwrap()
        .rooms()
        .selected()
        .unwrap()
        .id();
    let got = runtime.block_on(next_text(&mut bob_events, direct, "alice"));
    assert_eq!(got, "🎉 for you");

    // Verify: the dialog shows the same safety number bob's client computes.
    harness.get_by_label("Verify…").click();
    let bobs_view = runtime
        .block_on(bob.verification(&UserName::parse("alice").unwrap()))
        .unwrap();
    let first_row: Vec<String> = bobs_view.safety_number.groups()[..4]
        .iter()
        .map(|group| format!("{group:05}"))
        .collect();
    let first_row = first_row.join(" ");
    wait_until(&mut harness, "the safety number", |h| {
        has_label(h, &first_row)
    });
    // Widgets in windows are clicked through accessibility: kittest 0.37 reports their
    // bounds offset by the window's position (the app's own hit test is right).
    harness
        .get_by_label("They match: mark as verified")
        .click_accesskit();
    wait_until(&mut harness, "the confirmation", |h| {
        has_label(h, "bob is verified")
    });
    let client = harness.state().chat().unwrap().client().clone();
    let verified = runtime
        .block_on(client.verification(&UserName::parse("bob").unwrap()))
        .unwrap();
    assert!(verified.verified);
    harness.state_mut().shut_down();
    runtime.block_on(bob.close());
}

/// The next text message `from` someone in `room`, with its id.
async fn text_from(
    events: &mut EventStream,
    room: RoomId,
    from: &str,
) -> (String, confide_crypto::payload::MessageId) {
    next_entry(events, room, |entry| match &entry.content {
        confide_client::Content::Message { envelope, .. } if entry.sender.as_str() == from => {
            entry.text().map(|text| (text.to_owned(), envelope.id))
        }
        _ => None,
    })
    .await
}

fn payload(entry: &confide_client::Entry) -> Option<&Payload> {
    match &entry.content {
        confide_client::Content::Message { envelope, .. } => Some(&envelope.body),
        _ => None,
    }
}

#[test]
fn reactions_edits_replies_and_deletions_travel_both_ways() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start()).unwrap();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (bob, mut bob_events) = runtime.block_on(register(&server, dirs.1.path(), "bob"));
    let mut harness = app_for(dirs.0.path(), &server.address(), "alice");
    register_in_app(&mut harness);
    let lobby = lobby(&harness);
    runtime
        .block_on(bob.send_text(Target::Room(lobby), "lunch?"))
        .unwrap();
    let lunch = runtime.block_on(next_entry(&mut bob_events, lobby, |entry| {
        (entry.text() == Some("lunch?")).then(|| match &entry.content {
            confide_client::Content::Message { envelope, .. } => envelope.id,
            _ => unreachable!(),
        })
    }));
    wait_until(&mut harness, "bob's message", |h| has_label(h, "lunch?"));

    // Alice reacts from the message's menu; bob's client gets the reaction.
    harness.get_by_label("lunch?").click_secondary();
    wait_until(&mut harness, "the message menu", |h| {
        h.query_by_label("👍").is_some()
    });
    harness.get_by_label("👍").click_accesskit();
    // The click is handled in the next frame, which starts the request.
    harness.step();
    let reaction = runtime.block_on(next_entry(&mut bob_events, lobby, |entry| {
        match payload(entry) {
            Some(Payload::Reaction { target, emoji, add }) => Some((*target, emoji.clone(), *add)),
            _ => None,
        }
    }));
    assert_eq!(reaction, (lunch, "👍".to_owned(), true));
    wait_until(&mut harness, "the reaction under the message", |h| {
        has_label(h, "👍 1")
    });

    // Bob edits his message: alice's window shows the new text, marked as edited.
    runtime
        .block_on(bob.edit(lobby, lunch, "lunch at noon?"))
        .unwrap();
    wait_until(&mut harness, "the edit", |h| {
        has_label(h, "lunch at noon?") && has_label(h, "(edited)")
    });
    assert!(harness.query_by_label("lunch?").is_none());

    // Alice replies to it from the menu.
    harness.get_by_label("lunch at noon?").click_secondary();
    wait_until(&mut harness, "the message menu", |h| {
        h.query_by_label("Reply").is_some()
    });
    harness.get_by_label("Reply").click_accesskit();
    wait_until(&mut harness, "the reply banner", |h| {
        has_label(h, "Replying to bob: lunch at noon?")
    });
    send_message(&mut harness, "yes!");
    let (to, text, yes) = runtime.block_on(next_entry(&mut bob_events, lobby, |entry| {
        match (payload(entry), &entry.content) {
            (
                Some(Payload::Reply { to, text }),
                confide_client::Content::Message { envelope, .. },
            ) => Some((*to, text.clone(), envelope.id)),
            _ => None,
        }
    }));
    assert_eq!((to, text.as_str()), (lunch, "yes!"));
    wait_until(&mut harness, "the reply with its quote", |h| {
        has_label(h, "in reply to bob: lunch at noon?") && has_label(h, "yes!")
    });
    snapshot(&mut harness, "conversation");

    // And deletes her reply: bob's client gets the deletion, her window hides it.
    harness.get_by_label("yes!").click_secondary();
    wait_until(&mut harness, "the message menu", |h| {
        h.query_by_label("Delete").is_some()
    });
    harness.get_by_label("Delete").click_accesskit();
    harness.step();
    let deleted = runtime.block_on(next_entry(&mut bob_events, lobby, |entry| {
        match payload(entry) {
            Some(Payload::Delete { target }) => Some(*target),
            _ => None,
        }
    }));
    assert_eq!(deleted, yes);
    wait_until(&mut harness, "the deleted message", |h| {
        has_label(h, "message deleted") && h.query_by_label("yes!").is_none()
    });
    harness.state_mut().shut_down();
    runtime.block_on(bob.close());
}

#[test]
fn search_and_export_the_decrypted_history() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start()).unwrap();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (bob, _bob_events) = runtime.block_on(register(&server, dirs.1.path(), "bob"));
    let mut harness = app_for(dirs.0.path(), &server.address(), "alice");
    register_in_app(&mut harness);
    let lobby = lobby(&harness);
    for text in ["alpha one", "beta two", "Alpha three"] {
        runtime
            .block_on(bob.send_text(Target::Room(lobby), text))
            .unwrap();
    }
    wait_until(&mut harness, "bob's messages", |h| {
        has_label(h, "Alpha three")
    });

    harness.get_by_label("Search").click();
    wait_until(&mut harness, "the search dialog", |h| {
        h.query_by_label("Search for").is_some()
    });
    harness.get_by_label("Search for").focus();
    harness.step();
    harness.get_by_label("Search for").type_text("alpha");
    harness.step();
    let buttons: Vec<_> = harness.query_all_by_label("Search").collect();
    // The dialog's button is the last one drawn.
    buttons.last().unwrap().click_accesskit();
    harness.step();
    wait_until(&mut harness, "the results", |h| {
        has_label(h, "bob: Alpha three") && has_label(h, "bob: alpha one")
    });
    assert!(!has_label(&harness, "bob: beta two"));
    harness.get_by_label("Close").click_accesskit();
    harness.step();

    // Export to a file of the test's choosing.
    harness.get_by_label("Export…").click_accesskit();
    wait_until(&mut harness, "the export dialog", |h| {
        h.query_by_label("Save to").is_some()
    });
    let file = dirs.0.path().join("lobby.txt");
    harness
        .get_by_label("Save to")
        .set_text_value_accesskit(&file.display().to_string());
    harness.step();
    harness.get_by_label("OK").click_accesskit();
    harness.step();
    wait_until(&mut harness, "the export", |h| {
        has_label(h, "exported lobby")
    });
    let log = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(lines[0].ends_with("] bob: alpha one"), "{log}");
    assert!(lines[2].ends_with("] bob: Alpha three"), "{log}");
    assert_eq!(lines[0].find(']'), Some(9), "[HH:MM:SS] prefix: {log}");
    harness.state_mut().shut_down();
    runtime.block_on(bob.close());
}

#[test]
fn shift_enter_makes_a_new_line_and_an_own_message_can_be_edited() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start()).unwrap();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (bob, mut bob_events) = runtime.block_on(register(&server, dirs.1.path(), "bob"));
    let mut harness = app_for(dirs.0.path(), &server.address(), "alice");
    register_in_app(&mut harness);
    let lobby = lobby(&harness);

    type_message(&mut harness, "first line");
    harness.key_press_modifiers(egui::Modifiers::SHIFT, egui::Key::Enter);
    harness.step();
    harness.get_by_label("Message").type_text("second line");
    harness.step();
    assert_eq!(
        harness.get_by_label("Message").value().as_deref(),
        Some("first line\nsecond line"),
        "Shift+Enter adds a line instead of sending"
    );
    harness.key_press(egui::Key::Enter);
    harness.step();
    let (text, id) = runtime.block_on(text_from(&mut bob_events, lobby, "alice"));
    assert_eq!(text, "first line\nsecond line");
    let _ = id;

    // Edit an own message from its menu: the input takes the text, Enter sends the edit.
    send_message(&mut harness, "see you tmorrow");
    let id = runtime.block_on(next_entry(&mut bob_events, lobby, |entry| {
        match &entry.content {
            confide_client::Content::Message { envelope, .. }
                if entry.text() == Some("see you tmorrow") =>
            {
                Some(envelope.id)
            }
            _ => None,
        }
    }));
    wait_until(&mut harness, "the message", |h| {
        h.query_by_label("see you tmorrow").is_some()
    });
    harness.get_by_label("see you tmorrow").click_secondary();
    wait_until(&mut harness, "the message menu", |h| {
        h.query_by_label("Edit").is_some()
    });
    harness.get_by_label("Edit").click_accesskit();
    wait_until(&mut harness, "the edit banner", |h| {
        has_label(h, "Editing your message")
    });
    assert_eq!(
        harness.get_by_label("Message").value().as_deref(),
        Some("see you tmorrow")
    );
    send_message(&mut harness, "!");
    let edit = runtime.block_on(next_entry(&mut bob_events, lobby, |entry| {
        match payload(entry) {
            Some(Payload::Edit { target, text }) => Some((*target, text.clone())),
            _ => None,
        }
    }));
    assert_eq!(edit, (id, "see you tmorrow!".to_owned()));
    wait_until(&mut harness, "the edited message", |h| {
        h.query_by_label("see you tmorrow!").is_some() && has_label(h, "(edited)")
    });
    harness.state_mut().shut_down();
    runtime.block_on(bob.close());
}

#[test]
fn older_messages_load_on_request() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (bob, mut bob_events) = runtime.block_on(register(&server, dir.path(), "bob"));
    let lobby = runtime.block_on(bob.rooms()).unwrap()[0].id;
    // More than the first page the window loads.
    for i in 0..120 {
        runtime
            .block_on(bob.send_text(Target::Room(lobby), &format!("number {i:03}")))
            .unwrap();
    }
    // Taken from the stream, so the next login does not replay them.
    let mut last = String::new();
    while last != "number 119" {
        last = runtime.block_on(text_from(&mut bob_events, lobby, "bob")).0;
    }
    runtime.block_on(bob.close());

    // Bob opens the app on the same profile (the server is pinned there already).
    let mut harness = app_for(dir.path(), &server.address(), "bob");
    submit(&mut harness, "bob password", "Log in");
    wait_until(&mut harness, "the chat screen", |h| {
        h.state().is_connected()
    });
    wait_until(&mut harness, "the newest messages", |h| {
        has_label(h, "number 119")
    });
    assert!(!has_label(&harness, "number 000"));
    wait_until(&mut harness, "the button", |h| {
        h.query_by_label("Load older messages").is_some()
    });
    harness
        .get_by_label("Load older messages")
        .click_accesskit();
    harness.step();
    wait_until(&mut harness, "the oldest messages", |h| {
        has_label(h, "number 000")
    });
    wait_until(&mut harness, "the button to go", |h| {
        h.query_by_label("Load older messages").is_none()
    });
    harness.state_mut().shut_down();
}

/// A file dropped on the window, as the windowing layer hands it to egui.
#[derive(Debug)]
struct Dropped(PathBuf);

impl egui::DroppedFile for Dropped {
    fn path(&self) -> &Path {
        &self.0
    }

    fn bytes(&self) -> Result<Vec<u8>, String> {
        std::fs::read(&self.0).map_err(|err| err.to_string())
    }
}

/// Bytes that differ all along (so a misplaced chunk would show).
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0] ^ seed)
        .collect()
}

/// The next file `from` someone sends to `room`.
async fn next_file(
    events: &mut EventStream,
    room: RoomId,
    from: &str,
) -> confide_crypto::payload::FilePointer {
    next_entry(events, room, |entry| match payload(entry) {
        Some(Payload::File(pointer)) if entry.sender.as_str() == from => Some(pointer.clone()),
        _ => None,
    })
    .await
}

/// Points the open file browser at `folder`.
fn browse_to(harness: &mut App<'_>, folder: &Path) {
    wait_until(harness, "the file browser", |h| {
        h.query_by_label("Folder").is_some()
    });
    harness
        .get_by_label("Folder")
        .set_text_value_accesskit(&folder.display().to_string());
    harness.step();
    harness.get_by_label("Go").click_accesskit();
    harness.step();
}

#[test]
fn files_sent_with_the_file_button_and_by_drag_and_drop_reach_bob_intact() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // A small limit, to see a refusal.
    let server = runtime
        .block_on(TestServer::start_with(|config| {
            config.limits.max_file_bytes = 1024 * 1024;
        }))
        .unwrap();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (bob, mut bob_events) = runtime.block_on(register(&server, dirs.1.path(), "bob"));
    let mut harness = app_for(dirs.0.path(), &server.address(), "alice");
    register_in_app(&mut harness);
    let lobby = lobby(&harness);
    let files = tempfile::tempdir().unwrap();
    std::fs::create_dir(files.path().join("photos")).unwrap();
    let notes = pattern(300_000, 1);
    std::fs::write(files.path().join("notes.txt"), &notes).unwrap();

    // The file button opens the browser; pick the folder, then the file, then Send.
    // (The bottom panel settles its height in the first frames.)
    harness.run_steps(3);
    harness.get_by_label("📎 File…").click();
    harness.step();
    browse_to(&mut harness, files.path());
    wait_until(&mut harness, "the folder's files", |h| {
        h.query_by_label("📄 notes.txt").is_some() && h.query_by_label("📁 photos").is_some()
    });
    harness.get_by_label("📄 notes.txt").click_accesskit();
    harness.step();
    assert_eq!(
        harness.get_by_label("File name").value().as_deref(),
        Some("notes.txt")
    );
    harness.get_by_label("Send").click_accesskit();
    harness.step();
    let pointer = runtime.block_on(next_file(&mut bob_events, lobby, "alice"));
    assert_eq!(
        (pointer.name.as_str(), pointer.size, pointer.mime.as_str()),
        ("notes.txt", 300_000, "text/plain")
    );
    let got = runtime
        .block_on(bob.download_bytes(&pointer, u64::MAX, confide_client::no_progress()))
        .unwrap();
    assert!(got == notes, "bob got the exact bytes");
    wait_until(&mut harness, "the upload's end", |h| {
        has_label(h, "sent notes.txt")
    });
    assert!(
        harness.query_by_label("Folder").is_none(),
        "the browser closed"
    );

    // Dragging a file over the window shows where it will go; dropping sends it.
    let photo = files.path().join("photos").join("cat.jpg");
    let cat = pattern(70_000, 2);
    std::fs::write(&photo, &cat).unwrap();
    harness.input_mut().hovered_files.push(egui::HoveredFile {
        path: Some(photo.clone()),
        mime: String::new(),
    });
    wait_until(&mut harness, "the drop hint", |h| {
        has_label(h, "Drop files here to send them to lobby")
    });
    harness.input_mut().hovered_files.clear();
    harness
        .input_mut()
        .dropped_files
        .push(Arc::new(Dropped(photo)));
    harness.step();
    wait_until(&mut harness, "the hint to go", |h| {
        !has_label(h, "Drop files here")
    });
    let pointer = runtime.block_on(next_file(&mut bob_events, lobby, "alice"));
    assert_eq!(
        (pointer.name.as_str(), pointer.mime.as_str()),
        ("cat.jpg", "image/jpeg")
    );
    let got = runtime
        .block_on(bob.download_bytes(&pointer, u64::MAX, confide_client::no_progress()))
        .unwrap();
    assert!(got == cat, "bob got the exact bytes");
    wait_until(&mut harness, "the second upload's end", |h| {
        has_label(h, "sent cat.jpg")
    });

    // Deleting the message deletes the file from the server too.
    harness.get_by_label("📄 cat.jpg").click_secondary();
    wait_until(&mut harness, "the message menu", |h| {
        h.query_by_label("Delete").is_some()
    });
    harness.get_by_label("Delete").click_accesskit();
    harness.step();
    wait_until(&mut harness, "the deletion", |h| {
        has_label(h, "message and file deleted") && h.query_by_label("📄 cat.jpg").is_none()
    });
    let gone = runtime
        .block_on(bob.download_bytes(&pointer, u64::MAX, confide_client::no_progress()))
        .unwrap_err();
    assert_eq!(
        gone.code(),
        Some(confide_proto::ErrorCode::NoSuchBlob),
        "{gone}"
    );

    // A file over the server's limit is refused before it is uploaded, and says why.
    let big = files.path().join("big.bin");
    std::fs::write(&big, pattern(1536 * 1024, 4)).unwrap();
    harness
        .input_mut()
        .dropped_files
        .push(Arc::new(Dropped(big)));
    harness.step();
    wait_until(&mut harness, "the refusal", |h| {
        has_label(
            h,
            "big.bin: not sent: file too large: file of 1.5 MiB exceeds this server's limit of 1.0 MiB",
        )
    });
    harness.get_by_label("Dismiss").click();
    harness.step();
    wait_until(&mut harness, "the error to go", |h| {
        !has_label(h, "exceeds this server's limit")
    });
    harness.state_mut().shut_down();
    runtime.block_on(bob.close());
}

/// A two-second tone that swells, as Ogg Opus, with its summary.
fn voice_message() -> (Vec<u8>, u32, Vec<u8>) {
    let (ogg, duration_ms, waveform, _) = voice_message_with_samples();
    (ogg, duration_ms, waveform)
}

/// [`voice_message`], and the samples it encodes.
fn voice_message_with_samples() -> (Vec<u8>, u32, Vec<u8>, Vec<f32>) {
    let rate = confide_audio::SAMPLE_RATE as usize;
    let tone: Vec<f32> = (0..2 * rate)
        .map(|i| {
            let t = i as f32 / rate as f32;
            0.6 * (t / 2.0) * (2.0 * std::f32::consts::PI * 440.0 * t).sin()
        })
        .collect();
    let ogg = confide_audio::encode_ogg_opus(&tone).unwrap();
    let summary = confide_audio::VoiceSummary::new(&tone, 64);
    (
        ogg,
        u32::try_from(summary.duration_ms).unwrap(),
        summary.waveform,
        tone,
    )
}

#[test]
fn files_and_voice_messages_from_bob_show_and_save_where_alice_chooses() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start()).unwrap();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (bob, _bob_events) = runtime.block_on(register(&server, dirs.1.path(), "bob"));
    let mut harness = app_for(dirs.0.path(), &server.address(), "alice");
    register_in_app(&mut harness);
    let lobby = lobby(&harness);

    let outbox = tempfile::tempdir().unwrap();
    let report = pattern(5 * 1024, 3);
    std::fs::write(outbox.path().join("report.pdf"), &report).unwrap();
    runtime
        .block_on(bob.send_file(
            Target::Room(lobby),
            &outbox.path().join("report.pdf"),
            confide_client::no_progress(),
        ))
        .unwrap();
    let (ogg, duration_ms, waveform) = voice_message();
    assert_eq!(duration_ms, 2000);
    runtime
        .block_on(bob.send_voice(
            Target::Room(lobby),
            ogg,
            duration_ms,
            waveform,
            confide_client::no_progress(),
        ))
        .unwrap();

    // Name, size and type of the file; duration and waveform of the voice message.
    wait_until(&mut harness, "the file and the voice message", |h| {
        has_label(h, "📄 report.pdf") && has_label(h, "🎤 Voice message")
    });
    assert!(has_label(&harness, "(5.0 KiB, application/pdf)"));
    assert!(harness.query_by_label("0:02").is_some(), "the duration");
    assert!(has_label(&harness, "Waveform of 64 bars"));
    snapshot(&mut harness, "media");

    // Save… asks where (the suggested name is the sender's), then downloads.
    let inbox = tempfile::tempdir().unwrap();
    harness.get_by_label("Save…").click();
    harness.step();
    browse_to(&mut harness, inbox.path());
    assert_eq!(
        harness.get_by_label("File name").value().as_deref(),
        Some("report.pdf")
    );
    harness.get_by_label("Save").click_accesskit();
    harness.step();
    wait_until(&mut harness, "the download", |h| has_label(h, "saved "));
    let saved = inbox.path().join("report.pdf");
    assert!(std::fs::read(&saved).unwrap() == report, "the exact bytes");

    // Saving to the same name again asks first, and another name can be chosen.
    std::fs::write(&saved, b"mine").unwrap();
    harness.get_by_label("Save…").click();
    harness.step();
    browse_to(&mut harness, inbox.path());
    harness.get_by_label("Save").click_accesskit();
    harness.step();
    wait_until(&mut harness, "the question", |h| {
        has_label(h, "already exists. Replace it")
    });
    harness
        .get_by_label("Choose another name")
        .click_accesskit();
    harness.step();
    wait_until(&mut harness, "the browser again", |h| {
        h.query_by_label("File name").is_some()
    });
    harness
        .get_by_label("File name")
        .set_text_value_accesskit("report (2).pdf");
    harness.step();
    harness.get_by_label("Save").click_accesskit();
    harness.step();
    wait_until(&mut harness, "the second download", |h| {
        has_label(h, "report (2).pdf")
    });
    wait_until(&mut harness, "the file", |_| {
        inbox.path().join("report (2).pdf").exists()
    });
    assert!(std::fs::read(inbox.path().join("report (2).pdf")).unwrap() == report);
    assert_eq!(std::fs::read(&saved).unwrap(), b"mine", "not replaced");
    harness.state_mut().shut_down();
    runtime.block_on(bob.close());
}

/// Hovers `label` until its tooltip contains `reason`.
fn hover_reason(harness: &mut App<'_>, label: &str, reason: &str) {
    let deadline = Instant::now() + TIMEOUT;
    harness.get_by_label(label).hover();
    loop {
        harness.step();
        if has_label(harness, reason) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the reason {reason:?} on {label:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn without_a_sound_card_voice_buttons_are_disabled_with_the_reason() {
    let devices = confide_audio::availability();
    if devices.microphone.is_usable() || devices.speaker.is_usable() {
        eprintln!("this machine has a sound device ({devices:?}); nothing to check");
        return;
    }
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start()).unwrap();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (bob, _bob_events) = runtime.block_on(register(&server, dirs.1.path(), "bob"));
    let mut harness = app_for(dirs.0.path(), &server.address(), "alice");
    register_in_app(&mut harness);
    let lobby = lobby(&harness);
    let (ogg, duration_ms, waveform) = voice_message();
    runtime
        .block_on(bob.send_voice(
            Target::Room(lobby),
            ogg,
            duration_ms,
            waveform,
            confide_client::no_progress(),
        ))
        .unwrap();
    wait_until(&mut harness, "the voice message", |h| {
        has_label(h, "🎤 Voice message")
    });

    // Each button is disabled and says why on hover (the system's reason).
    for (label, reason) in [
        ("🎤 Record", "no usable microphone"),
        ("🎙 Talk", "no usable microphone"),
        ("🔈 Listen", "no usable speaker"),
        ("▶", "no usable speaker"),
    ] {
        hover_reason(&mut harness, label, reason);
        let button = harness.get_by_label(label);
        assert!(button.accesskit_node().is_disabled(), "{label} is disabled");
    }
    let microphone = devices.microphone.reason().unwrap().to_owned();
    hover_reason(&mut harness, "🎤 Record", &microphone);

    // Clicking them does nothing: no recording, no download, no error.
    for label in ["🎤 Record", "🎙 Talk", "🔈 Listen", "▶"] {
        harness.get_by_label(label).click();
        harness.step();
        harness.get_by_label(label).click_accesskit();
        harness.step();
    }
    harness.run_steps(5);
    assert!(!has_label(&harness, "Recording"));
    assert!(harness.query_by_label("⏹").is_none(), "nothing plays");
    assert!(!has_label(&harness, "voice:"), "not listening");
    let chat = harness.state().chat().unwrap();
    assert_eq!(chat.status(), None);
    harness.state_mut().shut_down();
    runtime.block_on(bob.close());
}

/// Marks the child process of the sound card test and names its directory.
const SOUND_DIR_VAR: &str = "CONFIDE_GUI_SOUND_DIR";

/// The system's ALSA configuration, which the virtual card's configuration includes.
const SYSTEM_ALSA_CONFIG: &str = "/usr/share/alsa/alsa.conf";

/// An ALSA configuration whose default device is virtual: alsa-lib's `file` plugin over
/// the `null` device records from `infile` and writes what it plays to `outfile` (raw
/// 16-bit, 48 kHz, mono), without a clock, so as fast as the program goes.
fn virtual_sound_card(infile: &Path, outfile: &Path) -> String {
    format!(
        r#"<{SYSTEM_ALSA_CONFIG}>
pcm.!default {{
    type plug
    slave {{
        pcm {{
            type file
            slave.pcm "null"
            file "{}"
            infile "{}"
            format "raw"
        }}
        format S16_LE
        rate 48000
        channels 1
    }}
}}
"#,
        outfile.display(),
        infile.display()
    )
}

fn read_s16(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32_768.0)
        .collect()
}

/// The app with a sound card: ALSA reads its configuration from `ALSA_CONFIG_PATH`,
/// which only a new process can be given, so this runs the test below as a child.
#[test]
fn with_a_sound_card_voice_messages_record_and_play_and_live_voice_is_heard() {
    if !Path::new(SYSTEM_ALSA_CONFIG).exists() {
        eprintln!("no {SYSTEM_ALSA_CONFIG}: no virtual sound card here; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // What the microphone hears: a second of a swelling tone, then silence.
    let (_, _, _, tone) = voice_message_with_samples();
    let bytes: Vec<u8> = tone
        .iter()
        .flat_map(|s| ((s * 32_767.0) as i16).to_le_bytes())
        .collect();
    std::fs::write(dir.path().join("microphone.raw"), bytes).unwrap();
    let config = dir.path().join("asound.conf");
    std::fs::write(
        &config,
        virtual_sound_card(
            &dir.path().join("microphone.raw"),
            &dir.path().join("speaker.raw"),
        ),
    )
    .unwrap();
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_with_a_virtual_sound_card",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("ALSA_CONFIG_PATH", &config)
        .env(SOUND_DIR_VAR, dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "the child failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran nothing:\n{text}");
    eprintln!("{text}");
}

#[test]
#[ignore = "run by with_a_sound_card_voice_messages_record_and_play_and_live_voice_is_heard"]
fn child_with_a_virtual_sound_card() {
    let Some(dir) = std::env::var_os(SOUND_DIR_VAR).map(PathBuf::from) else {
        return;
    };
    let devices = confide_audio::availability();
    assert!(
        devices.microphone.is_usable() && devices.speaker.is_usable(),
        "{devices:?}"
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(TestServer::start()).unwrap();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (bob, mut bob_events) = runtime.block_on(register(&server, dirs.1.path(), "bob"));
    let mut harness = app_for(dirs.0.path(), &server.address(), "alice");
    register_in_app(&mut harness);
    let lobby = lobby(&harness);

    // ▶ downloads bob's voice message and plays it: the speaker gets the tone.
    let (ogg, duration_ms, waveform, tone) = voice_message_with_samples();
    runtime
        .block_on(bob.send_voice(
            Target::Room(lobby),
            ogg,
            duration_ms,
            waveform,
            confide_client::no_progress(),
        ))
        .unwrap();
    wait_until(&mut harness, "the voice message", |h| {
        h.query_by_label("▶")
            .is_some_and(|b| !b.accesskit_node().is_disabled())
    });
    harness.run_steps(3);
    harness.get_by_label("▶").click();
    harness.step();
    let speaker = dir.join("speaker.raw");
    wait_until(&mut harness, "the message to play", |_| {
        read_s16(&speaker).len() >= tone.len()
    });
    let played = read_s16(&speaker);
    let similarity = confide_audio::correlation(&tone, &played, 4800);
    eprintln!(
        "played {} samples, correlation {similarity:.3}",
        played.len()
    );
    assert!(similarity > 0.8, "correlation {similarity}");
    wait_until(&mut harness, "the player to stop", |h| {
        h.query_by_label("⏹").is_none() && h.query_by_label("▶").is_some()
    });

    // 🎤 records, Send encodes and sends: bob gets a voice message with a waveform.
    harness.get_by_label("🎤 Record").click();
    harness.step();
    // The clock shows 0:00 from the click; wait until the microphone delivered a second
    // (on a loaded machine the device opens late, and Send before any sound is "nothing
    // was recorded").
    wait_until(&mut harness, "a second of recording", |h| {
        has_label(h, "Recording ") && !has_label(h, "Recording 0:00")
    });
    // Through accessibility: the recording row changes width as its clock ticks, so a
    // pointer aimed at last frame's Send can land on Cancel.
    harness.get_by_label("Send").click_accesskit();
    harness.step();
    // The window hands the encoded message to the core when it next draws.
    wait_until(&mut harness, "the upload's end", |h| {
        has_label(h, "sent a voice message")
    });
    let voice = runtime.block_on(next_entry(&mut bob_events, lobby, |entry| {
        match payload(entry) {
            Some(Payload::Voice(voice)) if entry.sender.as_str() == "alice" => Some(voice.clone()),
            _ => None,
        }
    }));
    assert!(
        voice.duration_ms > 0 && voice.waveform.len() == 64,
        "{voice:?}"
    );
    let ogg = runtime
        .block_on(bob.download_bytes(&voice.file, u64::MAX, confide_client::no_progress()))
        .unwrap();
    let recorded = confide_audio::decode_ogg_opus(&ogg).unwrap();
    eprintln!("recorded {} ms", recorded.duration_ms());
    assert!(!recorded.is_empty());

    // 🔈 Listen: bob's live voice is heard, with who talks and the delay.
    harness.get_by_label("🔈 Listen").click();
    harness.step();
    wait_until(&mut harness, "listening", |h| {
        has_label(h, "voice: waiting")
    });
    // The server relays only once it knows alice listens.
    std::thread::sleep(Duration::from_millis(300));
    let mut encoder = confide_audio::LiveEncoder::new().unwrap();
    for chunk in tone.chunks_exact(confide_audio::FRAME_SAMPLES).take(50) {
        let frame = confide_crypto::voice::VoiceFrame {
            captured_at_ms: now_ms(),
            packets: vec![encoder.encode(chunk).unwrap()],
        };
        runtime.block_on(bob.send_live_voice(lobby, frame)).unwrap();
        harness.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    wait_until(&mut harness, "bob's voice", |h| {
        has_label(h, "bob talking") && has_label(h, " ms")
    });
    let shown = harness
        .query_all_by_label_contains("voice: ")
        .filter_map(|node| node.accesskit_node().value())
        .collect::<Vec<_>>();
    eprintln!("live voice: {shown:?}");
    assert!(
        shown
            .iter()
            .any(|text| text.starts_with("voice: ") && text.ends_with(" ms")),
        "{shown:?}"
    );

    // 🎙 Talk: bob, listening, hears alice.
    runtime.block_on(bob.listen(lobby, true)).unwrap();
    harness.get_by_label("🎙 Talk").click();
    harness.step();
    let frame = runtime.block_on(async {
        loop {
            let event = tokio::time::timeout(TIMEOUT, bob_events.next())
                .await
                .expect("timed out waiting for alice's voice")
                .expect("stream ended");
            if let ClientEvent::Voice { room, user, frame } = event
                && room == lobby
                && user.as_str() == "alice"
            {
                return frame;
            }
        }
    });
    let mut decoder = confide_audio::LiveDecoder::new().unwrap();
    assert_eq!(
        decoder.decode(&frame.packets[0]).unwrap().len(),
        confide_audio::FRAME_SAMPLES
    );
    assert!(now_ms().abs_diff(frame.captured_at_ms) < 60_000);
    harness.get_by_label("🎙 Talk").click();
    harness.step();
    assert!(harness.state().chat().unwrap().status().is_none());
    harness.state_mut().shut_down();
    runtime.block_on(bob.close());
}

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}
