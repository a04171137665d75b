//! The responses the filters answer with.

use gateway_core::{DirectResponse, FilterAction};

/// A plain-text answer with `status`, `body` and extra `headers`.
pub(crate) fn answer(
    status: u16,
    body: &'static str,
    headers: Vec<(String, String)>,
) -> FilterAction {
    let mut response = DirectResponse::text(status, body);
    response.headers.extend(headers);
    FilterAction::Respond(response)
}
