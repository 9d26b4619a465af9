//! Answering OneBot action requests from `/` and `/api` clients: the few
//! Vigil carries out itself, the rest forwarded to the action upstream, and
//! every answer counted by action and status.

use std::sync::Arc;

use axum::extract::ws::Message;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::json;
use vigil_policy_runtime::SessionId;

use super::link::Link;
use super::protocol::{self, retcode, ActionRequest, ActionResponse};
use super::upstream;
use super::Settings;
use crate::core::{DataHandler, SessionHost};

/// The actions Vigil answers itself (each also as `<name>_async`). Their
/// names are also the only action labels of the metric, besides `other`
/// and `malformed`, so a client cannot grow the label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LocalAction {
    LoginInfo,
    Status,
    VersionInfo,
    CanSendImage,
    CanSendRecord,
}

impl LocalAction {
    const ALL: [LocalAction; 5] = [
        LocalAction::LoginInfo,
        LocalAction::Status,
        LocalAction::VersionInfo,
        LocalAction::CanSendImage,
        LocalAction::CanSendRecord,
    ];

    /// The action's name on the wire (without `_async`).
    fn name(self) -> &'static str {
        match self {
            LocalAction::LoginInfo => "get_login_info",
            LocalAction::Status => "get_status",
            LocalAction::VersionInfo => "get_version_info",
            LocalAction::CanSendImage => "can_send_image",
            LocalAction::CanSendRecord => "can_send_record",
        }
    }

    /// The local action `name` (without `_async`) names, if any.
    fn named(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|action| action.name() == name)
    }
}

/// The label of a malformed request in the metric.
const MALFORMED: &str = "malformed";

/// Labels of `vigil_onebot_actions_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    /// The action, when Vigil answers it itself; `other` (forwarded or
    /// unsupported) or `malformed` otherwise: never a client's free text.
    pub action: String,
    /// `ok`, `async` or `failed`.
    pub status: String,
}

/// Answers the data frames of one account's `/` and `/api` sessions as
/// action requests.
pub(crate) struct ActionHandler {
    pub(crate) settings: Arc<Settings>,
    /// The account whose sessions these are.
    pub(crate) self_id: i64,
    /// Its implementation, in gateway mode: every action goes up to it.
    pub(crate) link: Option<Arc<Link>>,
    /// The bounds on its sessions' actions waiting for the implementation.
    pub(crate) in_flight: upstream::InFlightLimits,
    pub(crate) answered: Family<ActionLabels, Counter>,
}

impl DataHandler for ActionHandler {
    /// Actions Vigil knows are answered at once; others go to the upstream
    /// on a task of their own, so a slow backend never holds up the
    /// session's reads.
    fn on_data(&self, host: &SessionHost, session: SessionId, frame: &[u8]) {
        let request = match protocol::parse_request(frame) {
            Ok(request) => request,
            Err(malformed) => {
                tracing::debug!(session_id = session, why = %malformed.why, "malformed OneBot action");
                let response =
                    ActionResponse::failed(retcode::BAD_REQUEST, malformed.why, malformed.echo);
                self.answer(host, session, MALFORMED, &response);
                return;
            }
        };
        let label = action_label(&request.action);
        if let Some(link) = &self.link {
            self.send_up(host, session, label, Arc::clone(link), request);
            return;
        }
        if let Some(response) = self.local_answer(host, &request) {
            self.answer(host, session, label, &response);
            return;
        }
        let Some(upstream) = self.settings.upstream.as_ref() else {
            let response = ActionResponse::failed(
                retcode::UNSUPPORTED,
                format!(
                    "unsupported action `{}` (no action_upstream configured)",
                    request.action
                ),
                request.echo,
            );
            self.answer(host, session, label, &response);
            return;
        };
        let Some(permit) = upstream.admit(session) else {
            let response = ActionResponse::failed(
                retcode::BAD_REQUEST,
                format!(
                    "too many actions waiting for the upstream (at most {} per session, {} in all)",
                    upstream::MAX_IN_FLIGHT_PER_SESSION,
                    upstream::MAX_IN_FLIGHT
                ),
                request.echo,
            );
            self.answer(host, session, label, &response);
            return;
        };
        let upstream = upstream.clone();
        let host = host.clone();
        let answered = self.answered.clone();
        tokio::spawn(async move {
            let ActionRequest {
                action,
                params,
                echo,
            } = request;
            let response = upstream.call(&action, &params, echo).await;
            drop(permit);
            answer_with(&answered, &host, session, label, &response);
        });
    }
}

impl ActionHandler {
    /// Sends an action up to the account's implementation on a task of its
    /// own, within the session's share of the in-flight actions.
    fn send_up(
        &self,
        host: &SessionHost,
        session: SessionId,
        label: &'static str,
        link: Arc<Link>,
        request: ActionRequest,
    ) {
        let Some(permit) = self.in_flight.admit(session) else {
            let response = ActionResponse::failed(
                retcode::BAD_REQUEST,
                format!(
                    "too many actions waiting for the implementation (at most {} per session)",
                    upstream::MAX_IN_FLIGHT_PER_SESSION
                ),
                request.echo,
            );
            self.answer(host, session, label, &response);
            return;
        };
        let host = host.clone();
        let answered = self.answered.clone();
        tokio::spawn(async move {
            let response = link.call(&host, request).await;
            drop(permit);
            answer_with(&answered, &host, session, label, &response);
        });
    }

    /// The answer to an action Vigil carries out itself; `None` for the rest.
    fn local_answer(&self, host: &SessionHost, request: &ActionRequest) -> Option<ActionResponse> {
        let (name, is_async) = match request.action.strip_suffix("_async") {
            Some(name) => (name, true),
            None => (request.action.as_str(), false),
        };
        let settings = &self.settings;
        let data = match LocalAction::named(name)? {
            LocalAction::LoginInfo => {
                json!({ "user_id": self.self_id, "nickname": settings.nickname })
            }
            LocalAction::Status => {
                let mut value = super::status(host).to_value();
                value["vigil"] = json!({
                    "sessions": host.session_count(),
                    "policy": host.policy().state().as_str(),
                });
                value
            }
            LocalAction::VersionInfo => json!({
                "app_name": "vigil",
                "app_version": env!("CARGO_PKG_VERSION"),
                "protocol_version": "v11",
            }),
            LocalAction::CanSendImage | LocalAction::CanSendRecord => json!({ "yes": false }),
        };
        let echo = request.echo.clone();
        Some(if is_async {
            ActionResponse::accepted(echo)
        } else {
            ActionResponse::ok(data, echo)
        })
    }

    fn answer(
        &self,
        host: &SessionHost,
        session: SessionId,
        label: &'static str,
        response: &ActionResponse,
    ) {
        answer_with(&self.answered, host, session, label, response);
    }
}

/// Counts and queues an answer. Answers are not subject to the queue's hard
/// limit ([`SessionHost::reply`]): they are few — bounded by the in-flight
/// limits — and an answer from the upstream is capped at the queue limit.
fn answer_with(
    answered: &Family<ActionLabels, Counter>,
    host: &SessionHost,
    session: SessionId,
    label: &'static str,
    response: &ActionResponse,
) {
    answered
        .get_or_create(&ActionLabels {
            action: label.to_owned(),
            status: protocol::status_of(response.retcode()).to_owned(),
        })
        .inc();
    // A session gone in the meantime has no one to answer.
    let _ = host.reply(session, Message::Text(response.to_json().into()));
}

/// An action as the metric labels it: Vigil's own by name, the rest pooled.
fn action_label(action: &str) -> &'static str {
    let name = action.strip_suffix("_async").unwrap_or(action);
    LocalAction::named(name).map_or("other", LocalAction::name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_actions_get_labels_of_their_own() {
        assert_eq!(action_label("get_status"), "get_status");
        assert_eq!(action_label("get_status_async"), "get_status");
        assert_eq!(action_label("send_msg"), "other");
        assert_eq!(action_label("anything a client makes up"), "other");
    }
}
