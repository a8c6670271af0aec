//! `GET /v1/openapi.json`: the hand-written OpenAPI 3.0 document of this API
//! (`openapi.json` beside this module), served as is. A test keeps it and the router in step.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, compiled in.
pub const DOCUMENT: &str = include_str!("../openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn document_and_router_serve_the_same_routes() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..2]), Some("3."));
        let methods = ["get", "post", "put", "delete", "patch"];
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .expect("paths")
            .iter()
            .flat_map(|(path, item)| {
                methods
                    .iter()
                    .filter(|m| item.get(**m).is_some())
                    .map(move |m| (m.to_string(), path.clone()))
            })
            .collect();
        let served: BTreeSet<(String, String)> = super::super::routes()
            .served
            .into_iter()
            .map(|(m, p)| (m.to_owned(), p.to_owned()))
            .collect();
        assert_eq!(documented, served);
    }

    /// Deny by default is only as good as the table: every route states who may call it,
    /// and the document says the same.
    #[test]
    fn document_states_the_access_the_router_enforces() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        let routes = super::super::routes();
        assert_eq!(
            routes.access.len(),
            routes.served.len(),
            "one access per route"
        );
        for ((method, path), access) in &routes.access {
            let op = &doc["paths"][*path][method.to_ascii_lowercase()];
            let auth = op["x-cloudos-auth"].as_str().unwrap_or_default();
            assert!(
                auth.starts_with(access.documented()),
                "{method} {path}: documented {auth:?}, enforced {access:?}"
            );
        }
    }

    #[test]
    fn every_operation_documents_its_errors() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("path item") {
                let responses = op["responses"].as_object().expect("responses");
                assert!(
                    responses.keys().any(|k| k.starts_with('2') || k == "101"),
                    "{method} {path} has no success response"
                );
            }
        }
    }
}
