//! The OpenAPI document, generated from the handlers' `#[utoipa::path]`s and the wire types.
//! Errors every operation can answer (400, 401, 500, and 413 where there is a body) are
//! added here rather than repeated on each handler.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Doc, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{events, routes};
use crate::ring::EventKind;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "drvisor control plane",
        description = "Control a running drvisor VM: run state, host breakpoints and watches, vCPU state, guest memory, and an event stream. Served on a Unix socket (mode 0600, no token) and optionally on loopback TCP with a bearer token.",
        license(name = "Apache-2.0"),
    ),
    paths(
        routes::vm, routes::set_state, routes::stop, routes::capabilities,
        routes::add_breakpoint, routes::add_watchpoint, routes::breakpoints,
        routes::breakpoint, routes::remove_breakpoint, routes::vcpus, routes::debugregs,
        routes::registers, routes::memory, events::events, routes::openapi,
    ),
    components(schemas(EventKind)),
    modifiers(&CommonErrors),
)]
struct ApiDoc;

struct CommonErrors;

fn error(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}

fn add_common(op: &mut Operation) {
    let mut add = |status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| error(description).into());
    };
    add(
        "400",
        "Malformed request: bad JSON, unknown field, bad query, path or header",
    );
    add("401", "TCP listener only: missing or wrong bearer token");
    add("500", "A KVM call failed");
    if op.request_body.is_some() {
        add("413", "The body is over 64 KiB");
    }
}

impl Modify for CommonErrors {
    fn modify(&self, doc: &mut Doc) {
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                add_common(op);
            }
        }
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // None on the Unix socket, the bearer token on TCP.
        doc.security = Some(vec![
            SecurityRequirement::default(),
            SecurityRequirement::new("bearer", Vec::<String>::new()),
        ]);
    }
}

/// The OpenAPI document as pretty JSON with a final newline (what `api/openapi.json` holds).
pub fn openapi_json() -> String {
    let mut s = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");

    /// `api/openapi.json` is the generated document; `DRVISOR_BLESS=1 cargo test -p
    /// drvisor-api openapi` rewrites it.
    #[test]
    fn openapi_json_is_the_committed_document() {
        let generated = openapi_json();
        if std::env::var_os("DRVISOR_BLESS").is_some_and(|v| v == "1") {
            std::fs::write(COMMITTED, &generated).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
        assert!(
            committed == generated,
            "api/openapi.json differs from the generated document; regenerate it with \
             `DRVISOR_BLESS=1 cargo test -p drvisor-api openapi` and commit it"
        );
    }

    #[test]
    fn every_operation_declares_its_errors() {
        let doc: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 13);
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                for status in ["400", "401", "500"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} lacks {status}"
                    );
                }
                if op.get("requestBody").is_some() {
                    assert!(responses.contains_key("413"), "{method} {path} lacks 413");
                }
            }
        }
        let events = &paths["/events"]["get"]["responses"]["200"]["content"];
        assert!(events.get("text/event-stream").is_some());
    }
}
