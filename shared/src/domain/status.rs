//! The states objects move through, as stored and as the API spells them.

macro_rules! string_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum!(Platform { Telegram => "telegram", Discord => "discord" });
string_enum!(PaymentStatus { Pending => "pending", Confirmed => "confirmed", Failed => "failed" });
string_enum!(MembershipStatus {
    Active => "active",
    Grace => "grace",
    Expired => "expired",
    Cancelled => "cancelled",
});
string_enum!(DeliveryStatus {
    Pending => "pending",
    Delivered => "delivered",
    Failed => "failed",
    ManualReview => "manual_review",
    Revoked => "revoked",
});
// Whether the renewal of a subscription is paid: set by the payment processor
// (`PATCH /v1/memberships/{id}/subscription`) and by time (grace → past_due, expired → unpaid).
string_enum!(CollectionState { Paid => "paid", PastDue => "past_due", Unpaid => "unpaid" });
// What the buyer should do next, shown on the membership (`subscription.next_step`).
string_enum!(NextStep {
    None => "none",
    PayRenewal => "pay_renewal",
    RenewAfterCancel => "renew_after_cancel",
    ContactSupport => "contact_support",
});
string_enum!(TicketStatus { Open => "open", Pending => "pending", Resolved => "resolved" });
string_enum!(TicketKind { General => "general", Delivery => "delivery" });
string_enum!(TicketPriority { Low => "low", Normal => "normal", High => "high", Urgent => "urgent" });
string_enum!(MessageAuthor { Merchant => "merchant", Buyer => "buyer", System => "system" });
