//! `GET /v1/memberships/{id}/delivery-diagnostics` (SPEC §7).

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverallStatus {
    /// Every check passed.
    Ok,
    /// Something needs a look (a provider did not answer, fallback link in use, buyer not joined yet).
    Warning,
    /// At least one check failed: delivery cannot work until it is fixed.
    Error,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DiagnosticCheck {
    /// `automation_configured`, `bot_permissions`, `member_identity`, `member_access` or
    /// `fallback_link`; always all five, in this order.
    pub name: String,
    pub status: CheckStatus,
    pub detail: String,
}

/// A suggested next step. `method` and `href` name the API call when there is one; both are
/// null for a step a person takes outside Hilt (fixing the bot's rights in Telegram).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DiagnosticAction {
    /// `retry_delivery`, `fix_bot_rights`, `configure_automation`, `ask_buyer_to_start_bot`,
    /// `ask_buyer_to_join_guild`, `collect_buyer_identity` or `open_support_ticket`.
    pub name: String,
    pub method: Option<String>,
    pub href: Option<String>,
    pub reason: String,
}

/// What the provider said, as far as it was asked (null: not asked or no answer).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ProviderState {
    /// `telegram` or `discord`.
    pub platform: String,
    /// How a delivery would go now: `telegram`, `discord`, `fallback` or `none`.
    pub delivery_path: String,
    /// Whether the provider answered at all (null when it was not asked).
    pub reachable: Option<bool>,
    pub bot_username: Option<String>,
    pub telegram_chat_id: Option<i64>,
    pub discord_guild_id: Option<String>,
    pub discord_role_id: Option<String>,
    /// Telegram: the bot's `getChatMember` status; Discord: `member` or `absent`.
    pub bot_status: Option<String>,
    pub bot_can_invite_users: Option<bool>,
    pub bot_can_restrict_members: Option<bool>,
    pub bot_can_manage_roles: Option<bool>,
    pub bot_highest_role_position: Option<i64>,
    pub role_position: Option<i64>,
    /// Telegram: the buyer's `getChatMember` status; Discord: `member` or `not_in_guild`.
    pub member_status: Option<String>,
    pub member_has_role: Option<bool>,
    /// The membership's own record, for comparison.
    pub delivery_status: String,
    pub fallback_used: bool,
    pub checked_at: String,
    /// Time spent asking the provider.
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryDiagnostics {
    pub membership_id: String,
    pub overall_status: OverallStatus,
    pub summary: String,
    pub provider_state: ProviderState,
    pub checks: Vec<DiagnosticCheck>,
    pub actions: Vec<DiagnosticAction>,
}
