use super::*;

fn ok(path: &str) -> Result<String, PathError> {
    Ok(path.to_string())
}

#[test]
fn normalises_or_refuses_each_table_entry() {
    use PathError::*;
    let long_ok = format!("/{}", "a".repeat(MAX_PATH_BYTES - 1));
    let too_long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
    let grows_too_long = format!("/{}", "é".repeat(MAX_PATH_BYTES / 4));
    let cases: Vec<(&str, Result<String, PathError>)> = vec![
        ("/", ok("/")),
        ("//", ok("/")),
        ("//channeltypes", ok("/channeltypes")),
        ("/channels/", ok("/channels")),
        ("/channels//messaging///x/", ok("/channels/messaging/x")),
        ("/channels/../channeltypes", ok("/channeltypes")),
        ("/channels/%2e%2e/channeltypes", ok("/channeltypes")),
        ("/channels/%2E%2e/channeltypes", ok("/channeltypes")),
        ("/channels/.%2E/channeltypes", ok("/channeltypes")),
        ("/channels/%2E/x", ok("/channels/x")),
        ("/channels/./x/.", ok("/channels/x")),
        ("/a/b/../../c", ok("/c")),
        ("/a/..", ok("/")),
        ("/a/%252e%252e/b", Err(EncodedPercent)),
        ("/a/%252E/b", Err(EncodedPercent)),
        ("/a/%25", Err(EncodedPercent)),
        ("/a/...", ok("/a/...")),
        ("/a/..x/.b", ok("/a/..x/.b")),
        ("/%41pp", ok("/App")),
        ("/%7e%2D%5f%30", ok("/~-_0")),
        ("/a%2ab%3a", ok("/a%2Ab%3A")),
        ("/a*b:c@d", ok("/a*b:c@d")),
        ("/caf\u{e9}", ok("/caf%C3%A9")),
        ("/caf%c3%a9", ok("/caf%C3%A9")),
        ("/a b", ok("/a%20b")),
        ("/a{b}|c^", ok("/a%7Bb%7D%7Cc%5E")),
        ("/a?b#c", ok("/a%3Fb%23c")),
        (&long_ok, Ok(long_ok.clone())),
        ("", Err(NotAbsolute)),
        ("channels", Err(NotAbsolute)),
        ("*", Err(NotAbsolute)),
        (&too_long, Err(TooLong)),
        (&grows_too_long, Err(TooLong)),
        ("/channels;x=1", Err(Semicolon)),
        ("/a%3bb", Err(Semicolon)),
        ("/a%3Bb", Err(Semicolon)),
        ("/a%2Fb", Err(EncodedSlash)),
        ("/a%2fb", Err(EncodedSlash)),
        ("/a\\b", Err(Backslash)),
        ("/a%5cb", Err(Backslash)),
        ("/a%5C", Err(Backslash)),
        ("/a%00", Err(Nul)),
        ("/a\0", Err(Nul)),
        ("/a%01", Err(ControlChar)),
        ("/a%1f", Err(ControlChar)),
        ("/a%7F", Err(ControlChar)),
        ("/a\tb", Err(ControlChar)),
        ("/a\nb", Err(ControlChar)),
        ("/a\x7f", Err(ControlChar)),
        ("/..", Err(AboveRoot)),
        ("/%2e%2e", Err(AboveRoot)),
        ("/a/../..", Err(AboveRoot)),
        ("/a%zz", Err(BadPercentEncoding)),
        ("/a%4", Err(BadPercentEncoding)),
        ("/a%", Err(BadPercentEncoding)),
        ("/a%%41", Err(BadPercentEncoding)),
    ];
    for (input, expected) in cases {
        let got = normalize(input).map(|p| p.to_path_string());
        assert_eq!(got, expected, "normalize({input:?})");
    }
}

#[test]
fn segments_are_non_empty_and_decoded() {
    let path = normalize("//a/%42//c/").unwrap();
    assert_eq!(path.segments().collect::<Vec<_>>(), ["a", "B", "c"]);
    assert_eq!(path.segment_count(), 3);
    assert_eq!(normalize("/").unwrap().segments().count(), 0);
}

#[test]
fn error_messages_are_client_readable() {
    assert_eq!(
        PathError::EncodedSlash.to_string(),
        "path contains an encoded slash"
    );
    assert_eq!(
        PathError::TooLong.to_string(),
        "path is longer than 2048 bytes"
    );
}

/// Random strings built from pieces that exercise every rule; whatever is
/// accepted must be a fixed point and must be plain, dot-free ASCII.
#[test]
fn normalisation_is_idempotent_on_generated_paths() {
    const PIECES: &[&str] = &[
        "/",
        "//",
        ".",
        "..",
        "%2e",
        "%2E",
        "%2e%2E",
        "%25",
        "%252e",
        "%41",
        "%7e",
        "%7E",
        "a",
        "B",
        "x1",
        "~",
        "-",
        "_",
        ":",
        "@",
        "*",
        "%2a",
        "é",
        "\u{1F600}",
        " ",
        "?",
        "{",
        "}",
        "%C3%A9",
        "%c3",
        "%zz",
        "%4",
        ";",
        "%3b",
        "\\",
        "%5c",
        "%2F",
        "%00",
        "\t",
        "channels",
        "ChannelTypes",
        "API",
        "V2",
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut accepted = 0;
    for _ in 0..20_000 {
        let mut raw = String::from("/");
        for _ in 0..(next() % 12) {
            raw.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
        }
        let Ok(path) = normalize(&raw) else { continue };
        accepted += 1;
        let text = path.to_path_string();
        assert!(text.is_ascii(), "{raw:?} -> {text:?}");
        assert!(
            !text.contains([';', '\\', '?', '#', ' ']),
            "{raw:?} -> {text:?}"
        );
        for segment in path.segments() {
            assert!(!segment.is_empty() && segment != "." && segment != "..");
        }
        assert_eq!(
            normalize(&text),
            Ok(path),
            "re-normalising {text:?} from {raw:?}"
        );
    }
    assert!(
        accepted > 1_000,
        "generator too hostile: {accepted} accepted"
    );
}
