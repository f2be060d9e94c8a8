//! Tests for the route table (`table.rs`) and for `Policy` decisions (`mod.rs`).
//! Normalisation tests live in `normalize/tests.rs`, and rule parsing and rendering
//! tests in `mod.rs`, next to the code they check.

use super::*;

const ROUTES_TSV: &str = include_str!("data/routes.tsv");
const UNLISTED_TSV: &str = include_str!("data/js-client-unlisted-routes.tsv");

/// (method, template, side, operation) for every data row of a TSV.
fn tsv_rows(text: &str) -> Vec<(&str, &str, &str, &str)> {
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            (c[0], c[1], c[2], c[3])
        })
        .collect()
}

/// The template with every `{...}` replaced by `value`.
fn fill(template: &str, value: &str) -> String {
    template
        .split('/')
        .map(|s| if s.starts_with('{') { value } else { s })
        .collect::<Vec<_>>()
        .join("/")
}

fn classify<'a>(table: &'a RouteTable, method: &str, path: &str) -> Option<RouteMatch<'a>> {
    table.classify(method, &normalize(path).unwrap())
}

pub(super) fn deny_all_unknown() -> Policy {
    Policy::new(UnknownRoutes::Deny, &[], &[]).unwrap()
}

pub(super) fn allow_all_unknown() -> Policy {
    Policy::new(UnknownRoutes::Allow, &[], &[]).unwrap()
}

fn forward(path: &str, operation: &str, template: &str) -> Decision {
    let (path, operation, template) = (path.into(), operation.into(), template.into());
    Decision::Forward {
        path,
        operation,
        template,
    }
}

fn rules(texts: &[&str]) -> Vec<Rule> {
    texts.iter().map(|t| t.parse().unwrap()).collect()
}

#[test]
fn embedded_table_parses_with_spec_rows_first_then_unlisted() {
    let table = RouteTable::embedded();
    let spec = tsv_rows(ROUTES_TSV).len();
    let unlisted = tsv_rows(UNLISTED_TSV).len();
    assert_eq!((spec, unlisted), (473, 13));
    let count = |source| table.routes().iter().filter(|r| r.source == source).count();
    assert_eq!(count(RouteSource::Spec), 473);
    // No unlisted row shares a (method, shape) with a spec row today.
    assert_eq!(count(RouteSource::JsClientUnlisted), 13);
    assert_eq!(table.routes().len(), 486);
    assert_eq!(&*table.routes()[0].template, "/app");
    assert_eq!(&*table.routes()[473].template, "/connect");
}

#[test]
fn every_spec_row_classifies_as_its_own_side_and_operation() {
    let table = RouteTable::embedded();
    let mut server_families = std::collections::BTreeSet::new();
    for (method, template, side, operation) in tsv_rows(ROUTES_TSV) {
        if side == "server" {
            let family = ["/api/v1/moderation/", "/api/v2/", "/automod/v1/"];
            let family = family.iter().find(|f| template.starts_with(**f));
            server_families.insert(family.copied().unwrap_or("v1"));
        }
        let path = fill(template, "x1");
        // Upper-casing literals must not change the result (placeholders too,
        // since "X1" is no literal anywhere).
        for variant in [path.clone(), path.to_ascii_uppercase()] {
            let found = classify(&table, method, &variant)
                .unwrap_or_else(|| panic!("{method} {variant} unclassified"));
            assert_eq!(found.route.side.as_str(), side, "{method} {variant}");
            assert_eq!(&*found.route.operation, operation, "{method} {variant}");
            assert_eq!(&*found.route.template, template, "{method} {variant}");
            let placeholder = if variant == path { "x1" } else { "X1" };
            assert_eq!(found.canonical_path, fill(template, placeholder));
        }
    }
    assert_eq!(server_families.len(), 4, "{server_families:?}");
}

#[test]
fn every_unlisted_row_classifies_with_its_guessed_side() {
    let table = RouteTable::embedded();
    for (method, template, side_guess, _) in tsv_rows(UNLISTED_TSV) {
        let expected = if side_guess == "server" {
            "server"
        } else {
            "client"
        };
        let found = classify(&table, method, &fill(template, "x1")).unwrap();
        assert_eq!(found.route.side.as_str(), expected, "{method} {template}");
        assert_eq!(found.route.source, RouteSource::JsClientUnlisted);
    }
}

/// Whitespace-separated rows of a table written inline in a test.
fn rows(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| !cols.is_empty())
}

#[test]
fn literal_segments_beat_placeholders_with_backtracking() {
    let table = RouteTable::embedded();
    // method, path, expected operation, expected side
    let cases = "
        POST   /messages/history              QueryMessageHistory         server
        POST   /messages/abc                  UpdateMessage               client
        GET    /messages/history              GetMessage                  client
        POST   /api/v2/chat/messages/history  QueryMessageHistory         server
        POST   /channels/messaging/query      GetOrCreateDistinctChannel  client
        POST   /channels/messaging/general    UpdateChannel               client
        GET    /imports/v2                    ListImportV2Tasks           server
        GET    /imports/abc                   GetImport                   server
        GET    /usergroups/search             SearchUserGroups            client
        GET    /usergroups/abc                GetUserGroup                client
        PATCH  /app                           UpdateApp                   server
        GET    /app                           GetApp                      client
        GET    /ChannelTypes                  ListChannelTypes            server
        GET    /connect                       Connect                     client
        GET    /hi                            SayHi                       client
        POST   /moderation/unflag             UnflagMessage               client
        DELETE /users/u1                      DeleteUser                  server
    ";
    for case in rows(cases) {
        let found = classify(&table, case[0], case[1]).unwrap();
        let got = (&*found.route.operation, found.route.side.as_str());
        assert_eq!(got, (case[2], case[3]), "{case:?}");
    }
}

#[test]
fn canonical_path_fixes_literal_case_and_keeps_placeholder_values() {
    let table = RouteTable::embedded();
    let found = classify(&table, "GET", "/API/V2/chat/Channels/Messaging/MyChan").unwrap();
    assert_eq!(
        found.canonical_path,
        "/api/v2/chat/channels/Messaging/MyChan"
    );
    assert_eq!(&*found.route.template, "/api/v2/chat/channels/{type}/{id}");
    let found = classify(&table, "GET", "/ChannelTypes").unwrap();
    assert_eq!(found.canonical_path, "/channeltypes");
}

#[test]
fn unknown_paths_and_methods_classify_as_none() {
    let table = RouteTable::embedded();
    let cases = "
        GET /nope
        GET /
        GET /export_channelsx
        GET /channels/a/b/c/d/e/f/g/h/i/j/k
        get /app
        HEAD /app
        OPTIONS /app
        GET /api/v3/app
    ";
    for case in rows(cases) {
        assert!(classify(&table, case[0], case[1]).is_none(), "{case:?}");
    }
}

#[test]
fn add_route_replaces_the_side_of_the_same_shape_or_inserts() {
    let mut table = RouteTable::embedded();
    let before = table.routes().len();
    let mut add = |method: &str, template: &str, side: Side| {
        table.add_route(method, template, side, "Op", RouteSource::Config)
    };
    // Different placeholder name and literal case: still the same route.
    add("GET", "/Messages/{message_id}", Side::Server).unwrap();
    add("GET", "/custom/{x}", Side::Client).unwrap();
    let bad = "get /a  GET a  GET /a//b  GET /a/{}  GET /a/%41  GET /a/..  GET /a?b  GET /{a}b";
    let bad: Vec<&str> = bad.split_whitespace().collect();
    for pair in bad.chunks(2) {
        let result = add(pair[0], pair[1], Side::Client);
        assert!(
            matches!(result, Err(TableError::BadRoute { .. })),
            "{pair:?}"
        );
    }
    assert_eq!(table.routes().len(), before + 1);
    let found = classify(&table, "GET", "/messages/m1").unwrap();
    let got = (&*found.route.operation, found.route.side);
    assert_eq!(got, ("GetMessage", Side::Server));
    let found = classify(&table, "GET", "/CUSTOM/Y").unwrap();
    assert_eq!(
        (found.canonical_path.as_str(), &*found.route.operation),
        ("/custom/Y", "Op")
    );
}

#[test]
fn set_side_by_operation_counts_changed_routes() {
    let mut table = RouteTable::embedded();
    assert_eq!(table.set_side_by_operation("UpdateApp", Side::Client), 2);
    assert_eq!(table.set_side_by_operation("UpdateApp", Side::Client), 0);
    assert_eq!(table.set_side_by_operation("updateapp", Side::Server), 0);
    assert_eq!(
        classify(&table, "PATCH", "/api/v2/app").unwrap().route.side,
        Side::Client
    );
}

#[test]
fn from_tsv_reports_bad_rows_with_line_numbers_and_lets_spec_win() {
    let header = "method\tpath\tside\toperation\tsummary\n";
    let unlisted_header = "method\tpath\tside_guess\tjs_function\tsource\tnote\n";
    let bad_side = format!("{header}GET\t/a\tclient\tA\ts\nGET\t/b\tboth\tB\ts\n");
    let err = RouteTable::from_tsv(&bad_side, unlisted_header).unwrap_err();
    assert!(matches!(err, TableError::BadRow { line: 3, .. }), "{err}");
    assert!(err.to_string().contains("line 3"), "{err}");
    let dup = format!("{header}GET\t/a/{{x}}\tclient\tA\ts\nGET\t/a/{{y}}\tserver\tB\ts\n");
    let err = RouteTable::from_tsv(&dup, unlisted_header).unwrap_err();
    assert!(
        matches!(err, TableError::DuplicateRoute { line: 3, .. }),
        "{err}"
    );
    let err = RouteTable::from_tsv("method\tpath\n", unlisted_header).unwrap_err();
    assert!(matches!(err, TableError::BadHeader { .. }), "{err}");
    let short = format!("{header}GET\t/a\n");
    assert!(RouteTable::from_tsv(&short, unlisted_header).is_err());
    let spec = format!("{header}GET\t/a/{{id}}\tclient\tGetA\ts\n\n");
    let unlisted = format!("{unlisted_header}GET\t/a/{{x}}\tserver\tX._getIt\tsrc\tn\r\nPOST\t/a\tunknown\tX.make / other\tsrc\tn\n");
    let table = RouteTable::from_tsv(&spec, &unlisted).unwrap();
    assert_eq!(table.routes().len(), 2);
    assert_eq!(table.routes()[0].side, Side::Client);
    assert_eq!(
        (&*table.routes()[1].operation, table.routes()[1].side),
        ("Make", Side::Client)
    );
}

#[test]
fn policy_overrides_apply_allow_then_deny() {
    let forwarded = |d: &Decision| matches!(d, Decision::Forward { .. });
    let policy = deny_all_unknown();
    assert!(!forwarded(&policy.decide("PATCH", "/app")));
    assert!(forwarded(&policy.decide("GET", "/app")));

    let policy = Policy::new(
        UnknownRoutes::Deny,
        &rules(&["UpdateApp"]),
        &rules(&["GetApp"]),
    )
    .unwrap();
    assert!(forwarded(&policy.decide("PATCH", "/api/v2/app")));
    assert_eq!(
        policy.decide("GET", "/app"),
        Decision::RefuseServerRoute {
            operation: "GetApp".into(),
            template: "/app".into()
        }
    );

    let allow = rules(&[
        "POST /messages/{message_id}/commit",
        "GET /custom/{x}",
        "UpdateApp",
    ]);
    let deny = rules(&["POST /messages/{id}", "UpdateApp"]);
    let policy = Policy::new(UnknownRoutes::Deny, &allow, &deny).unwrap();
    assert!(forwarded(&policy.decide("POST", "/messages/m1/commit")));
    assert!(!forwarded(&policy.decide("POST", "/messages/m1")));
    assert!(!forwarded(&policy.decide("PATCH", "/app")), "deny wins");
    assert_eq!(
        policy.decide("GET", "/Custom/V"),
        forward("/custom/V", "ConfigRoute", "/custom/{x}")
    );
    let line = "GET\t/custom/{x}\tclient\tConfigRoute\tconfig\n";
    assert!(policy.render().contains(line));
}

#[test]
fn policy_rejects_operation_rules_naming_no_operation() {
    for (allow, deny) in [
        (rules(&["SendMesage"]), vec![]),
        (vec![], rules(&["sendmessage"])),
    ] {
        let err = Policy::new(UnknownRoutes::Deny, &allow, &deny).unwrap_err();
        assert!(matches!(err, TableError::UnknownOperation(_)), "{err}");
    }
}

#[test]
fn unknown_routes_follow_the_configured_mode() {
    let allow = allow_all_unknown();
    assert_eq!(
        allow.decide("GET", "//Foo/./bar/../baz/"),
        forward("/Foo/baz", "Unknown", "unknown")
    );
    assert_eq!(allow.decide("HEAD", "/app"), allow.decide("HEAD", "/app/"));
    assert!(matches!(
        allow.decide("HEAD", "/app"),
        Decision::Forward { .. }
    ));
    assert_eq!(
        deny_all_unknown().decide("GET", "/foo"),
        Decision::RefuseUnknownRoute
    );
    assert_eq!(
        deny_all_unknown().decide("get", "/app"),
        Decision::RefuseUnknownRoute
    );
}

#[test]
fn bad_paths_are_reported_in_every_mode() {
    let cases = [
        ("/a%2Fb", PathError::EncodedSlash),
        ("/channels;x=1", PathError::Semicolon),
        ("/..", PathError::AboveRoot),
        ("app", PathError::NotAbsolute),
    ];
    for policy in [deny_all_unknown(), allow_all_unknown()] {
        for (path, error) in &cases {
            assert_eq!(policy.decide("GET", path), Decision::BadPath(error.clone()));
        }
    }
}
