//! Server-rendered pages: first-run setup, sign-in, CSRF, roles, errors, the Agents screens.

use crate::support::*;

#[tokio::test]
async fn first_run_setup_link_creates_the_first_global_administrator_once() {
    let dir = tempfile::tempdir().unwrap();
    let console = Console::start_in(dir, &[]);
    let link = console
        .setup_link
        .clone()
        .expect("the console prints a setup link when no administrator exists");
    let browser = Browser::new(&console);

    let (status, _) = browser.get("/setup?token=wrong").await;
    assert_eq!(status, 403);
    let (status, html) = browser.get(&link).await;
    assert_eq!(status, 200);
    let csrf = csrf_of(&html);
    let token = link.split("token=").nth(1).unwrap();

    let (status, _, html) = browser
        .post(
            "/setup",
            &[
                ("csrf", &csrf),
                ("token", token),
                ("username", "root"),
                ("password", "short"),
                ("password_confirm", "short"),
            ],
        )
        .await;
    assert_eq!(status, 422);
    assert!(html.contains("at least 12 characters"), "{html}");

    let (status, location, _) = browser
        .post(
            "/setup",
            &[
                ("csrf", &csrf),
                ("token", token),
                ("username", "root"),
                ("password", PASSWORD),
                ("password_confirm", PASSWORD),
            ],
        )
        .await;
    assert_eq!((status, location.as_str()), (303, "/"));
    let (status, home) = browser.get("/").await;
    assert_eq!(status, 200);
    assert!(
        home.contains("root · Global Administrator"),
        "signed in as the new administrator"
    );

    let (status, _) = browser.get(&link).await;
    assert_eq!(status, 410, "the setup link is one-time");
    let other = Browser::new(&console);
    assert_eq!(other.sign_in("root", PASSWORD).await, 303);
}

#[tokio::test]
async fn sign_in_csrf_roles_and_errors() {
    let console = Console::start(&[]);
    let browser = Browser::new(&console);

    // Anonymous: sent to sign in, coming back to where they were going.
    let (status, location) = browser.get_location("/agents?status=all").await;
    assert_eq!(status, 303);
    assert_eq!(location, "/login?next=/agents%3Fstatus%3Dall");

    // Wrong password.
    let (_, html) = browser.get("/login").await;
    let csrf = csrf_of(&html);
    let (status, _, html) = browser
        .post(
            "/login",
            &[("username", ADMIN), ("password", "nope"), ("csrf", &csrf)],
        )
        .await;
    assert_eq!(status, 401);
    assert!(html.contains("Wrong username or password."));
    // Sign-in form without its CSRF token.
    let (status, _, _) = browser
        .post("/login", &[("username", ADMIN), ("password", PASSWORD)])
        .await;
    assert_eq!(status, 403);

    assert_eq!(browser.sign_in(ADMIN, PASSWORD).await, 303);
    let (status, html) = browser.get("/agents/download").await;
    assert_eq!(status, 200);
    let csrf = csrf_of(&html);

    // A form post without its CSRF token is refused and changes nothing.
    let (status, _, html) = browser
        .post(
            "/agents/download/tokens",
            &[("expires", "24h"), ("max_uses", "1")],
        )
        .await;
    assert_eq!(status, 403);
    assert!(html.contains("security token"), "{html}");
    let (status, _, html) = browser
        .post(
            "/agents/download/tokens",
            &[("csrf", "forged"), ("expires", "24h")],
        )
        .await;
    assert_eq!(status, 403, "{html}");
    let api = Api::new(&console, ADMIN);
    assert_eq!(api.get("/enrollment-tokens").await.1["total"], 0);

    // With it: the page shows the install command with the fresh token, once.
    let (status, _, html) = browser
        .post(
            "/agents/download/tokens",
            &[("csrf", &csrf), ("expires", "2h"), ("max_uses", "2")],
        )
        .await;
    assert_eq!(status, 200);
    let command = texts(&html, "#install-command").join("");
    assert!(
        command.starts_with(&format!(
            "hybridsync agent install --console {} --enrollment-token hset_",
            console.url
        )),
        "{command}"
    );
    let token = command.split_whitespace().nth(6).unwrap().to_string();
    let (status, _, html) = browser
        .post(
            "/agents/download/tokens",
            &[("csrf", &csrf), ("expires", "soon")],
        )
        .await;
    assert_eq!(status, 422);
    assert!(html.contains("invalid duration"), "{html}");

    // The token from the page enrolls an agent that the Agents page lists.
    let _agent = Agent::install(&console, &token, "web01.corp.example.test");
    let (status, html) = browser.get("/agents").await;
    assert_eq!(status, 200);
    let names = texts(&html, "#agents tbody tr td:first-child");
    assert_eq!(names, vec!["web01.corp.example.test"]);
    let (status, table) = browser.get("/agents/table?status=all").await;
    assert_eq!(status, 200);
    assert!(
        table.contains("hx-trigger=\"every 10s\""),
        "the table refreshes itself"
    );
    assert!(table.contains("web01.corp.example.test"));

    // A reader sees pages but cannot change anything.
    let reader = Browser::new(&console);
    assert_eq!(reader.sign_in(READER, PASSWORD).await, 303);
    let (status, html) = reader.get("/agents/download").await;
    assert_eq!(status, 200);
    assert!(html.contains("can view but not create"));
    let csrf = csrf_of(&html);
    let (status, _, html) = reader
        .post(
            "/agents/download/tokens",
            &[("csrf", &csrf), ("expires", "1h")],
        )
        .await;
    assert_eq!(status, 403);
    assert!(html.contains("Global Reader"), "{html}");
    let id = api.get("/agents").await.1["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = reader.get(&format!("/agents/{id}/delete")).await;
    assert_eq!(status, 403);
    for page in [
        "/",
        "/agents",
        &format!("/agents/{id}"),
        "/configurations",
        "/provisioning-logs",
        "/password-reset/on-premises-integration",
        "/users",
        "/audit-logs",
    ] {
        let (status, _) = reader.get(page).await;
        assert_eq!(status, 200, "{page}");
    }

    // The admin deletes the (active) agent only with force, after a confirmation page.
    let (status, html) = browser.get(&format!("/agents/{id}/delete")).await;
    assert_eq!(status, 200);
    assert!(html.contains("Delete agent web01.corp.example.test?"));
    let csrf = csrf_of(&html);
    let (status, _, _) = browser
        .post(&format!("/agents/{id}/delete"), &[("csrf", &csrf)])
        .await;
    assert_eq!(status, 409);
    let (status, location, _) = browser
        .post(
            &format!("/agents/{id}/delete"),
            &[("csrf", &csrf), ("force", "1")],
        )
        .await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/agents?status=all&deleted=1")
    );
    let (_, audit) = browser.get("/audit-logs").await;
    assert!(audit.contains("agent.delete.forced"));

    // Errors: one page, a message, security headers.
    let r = browser
        .http
        .get(format!("{}/no-such-page", console.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("frame-ancestors 'none'"));
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("There is no page at this address."));

    // Sign out ends the session.
    let (_, html) = browser.get("/").await;
    let csrf = csrf_of(&html);
    let (status, location, _) = browser.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!((status, location.as_str()), (303, "/login"));
    assert_eq!(browser.get_location("/").await.0, 303);
}
