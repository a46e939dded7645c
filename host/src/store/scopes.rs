//! Scopes and roles exactly as API.md lists them: what user and key records
//! hold, and what `auth` checks. A set of scopes is a small
//! bit set so that checking one on every request costs nothing.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Scope {
    #[serde(rename = "read:scripts")]
    ReadScripts,
    #[serde(rename = "write:scripts")]
    WriteScripts,
    #[serde(rename = "execute:scripts")]
    ExecuteScripts,
    #[serde(rename = "read:executions")]
    ReadExecutions,
    #[serde(rename = "manage:schedules")]
    ManageSchedules,
    #[serde(rename = "manage:webhooks")]
    ManageWebhooks,
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::ReadScripts,
        Scope::WriteScripts,
        Scope::ExecuteScripts,
        Scope::ReadExecutions,
        Scope::ManageSchedules,
        Scope::ManageWebhooks,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::ReadScripts => "read:scripts",
            Scope::WriteScripts => "write:scripts",
            Scope::ExecuteScripts => "execute:scripts",
            Scope::ReadExecutions => "read:executions",
            Scope::ManageSchedules => "manage:schedules",
            Scope::ManageWebhooks => "manage:webhooks",
            Scope::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of scopes. `admin` is a scope of its own and, held, grants every other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub fn all() -> Self {
        Scope::ALL.into_iter().collect()
    }

    /// Whether a holder of this set may do what needs `scope`.
    pub fn allows(self, scope: Scope) -> bool {
        self.0 & (scope.bit() | Scope::Admin.bit()) != 0
    }

    /// Whether every scope of `other` is allowed by this set.
    pub fn covers(self, other: Scopes) -> bool {
        other.iter().all(|scope| self.allows(scope))
    }

    /// The scopes both sets allow (an admin set allows everything).
    pub fn intersect(self, other: Scopes) -> Self {
        Scope::ALL
            .into_iter()
            .filter(|s| self.allows(*s) && other.allows(*s))
            .collect()
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL
            .into_iter()
            .filter(move |s| self.0 & s.bit() != 0)
    }

    pub fn to_vec(self) -> Vec<Scope> {
        self.iter().collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Scopes(iter.into_iter().fold(0, |bits, s| bits | s.bit()))
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Developer,
    Analyst,
    #[default]
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Developer => "developer",
            Role::Analyst => "analyst",
            Role::Viewer => "viewer",
        }
    }

    /// What a role may do (API.md "Scopes").
    pub fn scopes(self) -> Scopes {
        use Scope::*;
        match self {
            Role::Admin => Scopes::all(),
            Role::Developer => [
                ReadScripts,
                WriteScripts,
                ExecuteScripts,
                ReadExecutions,
                ManageSchedules,
                ManageWebhooks,
            ]
            .into_iter()
            .collect(),
            Role::Analyst => [ReadScripts, ReadExecutions].into_iter().collect(),
            Role::Viewer => [ReadScripts].into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_have_the_contracts_scopes() {
        let names = |role: Role| -> Vec<&str> { role.scopes().iter().map(Scope::as_str).collect() };
        assert_eq!(names(Role::Admin).len(), 7);
        assert_eq!(
            names(Role::Developer),
            [
                "read:scripts",
                "write:scripts",
                "execute:scripts",
                "read:executions",
                "manage:schedules",
                "manage:webhooks"
            ]
        );
        assert_eq!(names(Role::Analyst), ["read:scripts", "read:executions"]);
        assert_eq!(names(Role::Viewer), ["read:scripts"]);
    }

    #[test]
    fn admin_allows_everything_and_sets_intersect() {
        let admin: Scopes = [Scope::Admin].into_iter().collect();
        assert!(Scope::ALL.iter().all(|s| admin.allows(*s)));
        let viewer = Role::Viewer.scopes();
        assert!(!viewer.allows(Scope::Admin));
        assert!(!viewer.covers(admin));
        assert!(admin.covers(Role::Developer.scopes()));
        assert_eq!(admin.intersect(viewer), viewer);
        assert_eq!(
            Role::Analyst.scopes().intersect(Role::Developer.scopes()),
            Role::Analyst.scopes()
        );
        let parsed: Vec<Scope> = serde_json::from_str(r#"["read:scripts","admin"]"#).unwrap();
        assert_eq!(parsed, [Scope::ReadScripts, Scope::Admin]);
        assert!(serde_json::from_str::<Scope>(r#""root""#).is_err());
    }
}
