//! A plugin's exports, whichever version of the contract it was built for.
//! The host speaks `vigil:policy@0.3.0` and still loads plugins built for
//! 0.2.0 and 0.1.0; this is the one place that tells them apart, so the
//! sandbox calls a plugin the same way whatever its version.

use vigil_policy_sdk::{Event, SessionId};
use wasmtime::component::InstancePre;
use wasmtime::Store;

use crate::bindings::{self, v0_1, v0_2};
use crate::columns::VerdictColumns;
use crate::contract::ContractViolation;
use crate::convert::{self, LentBatch};
use crate::sandbox::StoreState;

/// The contract versions this host loads, newest first, as a plugin
/// exports them.
pub(crate) const CURRENT_EXPORT: &str = "vigil:policy/policy@0.3.0";
/// The older ones still loaded.
pub(crate) const V0_2_EXPORT: &str = "vigil:policy/policy@0.2.0";
/// The first published contract, still loaded.
pub(crate) const V0_1_EXPORT: &str = "vigil:policy/policy@0.1.0";

/// A linked plugin, ready to be instantiated.
pub(crate) enum PluginPre {
    Current(bindings::PolicyPluginPre<StoreState>),
    V0_2(v0_2::PolicyPluginPre<StoreState>),
    V0_1(v0_1::PolicyPluginPre<StoreState>),
}

/// A live plugin instance.
pub(crate) enum Plugin {
    Current(bindings::PolicyPlugin),
    V0_2(v0_2::PolicyPlugin),
    V0_1(v0_1::PolicyPlugin),
}

impl PluginPre {
    /// The plugin as the newest contract it exports; the error is the
    /// current contract's reason for refusing it.
    pub(crate) fn new(instance_pre: InstancePre<StoreState>) -> wasmtime::Result<Self> {
        let current = match bindings::PolicyPluginPre::new(instance_pre.clone()) {
            Ok(pre) => return Ok(PluginPre::Current(pre)),
            Err(current) => current,
        };
        if let Ok(pre) = v0_2::PolicyPluginPre::new(instance_pre.clone()) {
            return Ok(PluginPre::V0_2(pre));
        }
        match v0_1::PolicyPluginPre::new(instance_pre) {
            Ok(pre) => Ok(PluginPre::V0_1(pre)),
            Err(_) => Err(current),
        }
    }

    /// The interface the plugin exports, e.g. `vigil:policy/policy@0.1.0`.
    pub(crate) fn contract(&self) -> &'static str {
        match self {
            PluginPre::Current(_) => CURRENT_EXPORT,
            PluginPre::V0_2(_) => V0_2_EXPORT,
            PluginPre::V0_1(_) => V0_1_EXPORT,
        }
    }

    pub(crate) fn instantiate(&self, store: &mut Store<StoreState>) -> wasmtime::Result<Plugin> {
        Ok(match self {
            PluginPre::Current(pre) => Plugin::Current(pre.instantiate(store)?),
            PluginPre::V0_2(pre) => Plugin::V0_2(pre.instantiate(store)?),
            PluginPre::V0_1(pre) => Plugin::V0_1(pre.instantiate(store)?),
        })
    }
}

impl Plugin {
    pub(crate) fn configure(
        &self,
        store: &mut Store<StoreState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        match self {
            Plugin::Current(plugin) => plugin.vigil_policy_policy().call_configure(store, config),
            Plugin::V0_2(plugin) => plugin.vigil_policy_policy().call_configure(store, config),
            Plugin::V0_1(plugin) => plugin.vigil_policy_policy().call_configure(store, config),
        }
    }

    pub(crate) fn on_events(
        &self,
        store: &mut Store<StoreState>,
        events: &[Event],
    ) -> wasmtime::Result<()> {
        match self {
            Plugin::Current(plugin) => plugin
                .vigil_policy_policy()
                .call_on_events(store, &convert::events_to_wit(events)),
            Plugin::V0_2(plugin) => plugin
                .vigil_policy_policy()
                .call_on_events(store, &convert::v0_2::events_to_wit(events)),
            Plugin::V0_1(plugin) => plugin
                .vigil_policy_policy()
                .call_on_events(store, &convert::v0_1::events_to_wit(events)),
        }
    }

    /// The plugin's verdicts; the inner error is an answer that could not
    /// be read as verdicts at all.
    pub(crate) fn assess(
        &self,
        store: &mut Store<StoreState>,
        now_ms: u64,
        facts: &LentBatch<'_>,
    ) -> wasmtime::Result<Result<VerdictColumns, ContractViolation>> {
        match self {
            Plugin::Current(plugin) => {
                let answer =
                    plugin
                        .vigil_policy_policy()
                        .call_assess(store, now_ms, facts.as_wit())?;
                Ok(convert::verdicts_from_wit(answer))
            }
            Plugin::V0_2(plugin) => {
                let (tiers, overdue) = (convert::v0_2::tiers(facts), facts.pong_overdue_flags());
                let batch = convert::v0_2::session_batch(facts, &tiers, &overdue);
                let answer = plugin
                    .vigil_policy_policy()
                    .call_assess(store, now_ms, batch)?;
                Ok(convert::v0_2::verdicts_from_wit(answer))
            }
            Plugin::V0_1(plugin) => {
                let (tiers, overdue) = (convert::v0_1::tiers(facts), facts.pong_overdue_flags());
                let batch = convert::v0_1::session_batch(facts, &tiers, &overdue);
                let answer = plugin
                    .vigil_policy_policy()
                    .call_assess(store, now_ms, batch)?;
                Ok(Ok(convert::v0_1::verdicts_from_wit(answer)))
            }
        }
    }

    pub(crate) fn select_evictions(
        &self,
        store: &mut Store<StoreState>,
        now_ms: u64,
        facts: &LentBatch<'_>,
        excess: u32,
    ) -> wasmtime::Result<Vec<SessionId>> {
        match self {
            Plugin::Current(plugin) => plugin.vigil_policy_policy().call_select_evictions(
                store,
                now_ms,
                facts.as_wit(),
                excess,
            ),
            Plugin::V0_2(plugin) => {
                let (tiers, overdue) = (convert::v0_2::tiers(facts), facts.pong_overdue_flags());
                let batch = convert::v0_2::session_batch(facts, &tiers, &overdue);
                plugin
                    .vigil_policy_policy()
                    .call_select_evictions(store, now_ms, batch, excess)
            }
            Plugin::V0_1(plugin) => {
                let (tiers, overdue) = (convert::v0_1::tiers(facts), facts.pong_overdue_flags());
                let batch = convert::v0_1::session_batch(facts, &tiers, &overdue);
                plugin
                    .vigil_policy_policy()
                    .call_select_evictions(store, now_ms, batch, excess)
            }
        }
    }
}
