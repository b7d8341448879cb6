//! The desktop app driven through its accessibility tree (egui_kittest), against a real
//! server over loopback TLS, with a second, real client on the other side.

use confide_client::{
    Auth, Client, ClientConfig, ClientEvent, ClientHandle, EventStream, Fingerprint, Profile,
};
use confide_crypto::payload::Payload;
use confide_gui::ConfideApp;
use confide_proto::{Password, RoomId, Target, UserName};
use confide_testkit::{TIMEOUT, TestServer};
use egui_kittest::Harness;
use egui_kittest::kittest::Queryable as _;
use std::path::Path;
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
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
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

/// The next message entry in `room` that `pick` accepts (bounded by the timeout).
async fn next_entry<T>(
    events: &mut EventStream,
    room: RoomId,
    mut pick: impl FnMut(&confide_client::Entry) -> Option<T>,
) -> T {
    loop {
        let event = tokio::time::timeout(TIMEOUT, events.next())
            .await
            .expect("timed out waiting for an entry")
            .expect("stream ended");
        if let ClientEvent::Entry { entry, .. } = event
            && entry.room == room
            && let Some(found) = pick(&entry)
        {
            return found;
        }
    }
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
