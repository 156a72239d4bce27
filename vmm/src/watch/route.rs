//! Which engine carries a data watchpoint: the four hardware slots, or page protection.
//! Pure: the probe's answer, the request and the slot situation in, a choice or a refusal out.

use std::str::FromStr;

/// What the user asked for (`--engine`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EngineChoice {
    /// Hardware debug-register slots only.
    Hw,
    /// Page protection only.
    Page,
    /// Hardware where it works here and fits, page protection otherwise.
    #[default]
    Auto,
}

/// A name that is no engine.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown engine `{0}`; use hw, page or auto")]
pub struct UnknownEngine(pub String);

impl FromStr for EngineChoice {
    type Err = UnknownEngine;
    fn from_str(s: &str) -> Result<Self, UnknownEngine> {
        match s {
            "hw" => Ok(EngineChoice::Hw),
            "page" => Ok(EngineChoice::Page),
            "auto" => Ok(EngineChoice::Auto),
            other => Err(UnknownEngine(crate::quote::cut(other).into_owned())),
        }
    }
}

pub use crate::debug::Engine;

/// What routing needs to know about one watch request.
#[derive(Clone, Debug)]
pub struct RouteInput {
    /// The user's choice.
    pub choice: EngineChoice,
    /// Why this host cannot deliver hardware data watchpoints (the probe's words), or `None`
    /// if it can.
    pub hw_unavailable: Option<String>,
    /// Whether the range fits one slot: length 1, 2, 4 or 8, aligned to it, and not read-only.
    pub fits_one_slot: bool,
    /// Whether a slot is free for it under the policy on every vCPU in its scope.
    pub slot_free: bool,
}

/// Why a watch cannot go where it was asked to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The hardware engine, on a host that does not deliver hardware data watchpoints.
    #[error("{0}; use the page or auto engine")]
    HwUnavailable(String),
    /// The hardware engine, for a range no slot can hold.
    #[error("a hardware slot watches 1, 2, 4 or 8 aligned bytes, for writes or reads-and-writes; use the page or auto engine for this range")]
    HwShape,
    /// The hardware engine, when no slot is free.
    #[error(
        "no hardware slot is free for it under the current policy; use the page or auto engine"
    )]
    NoFreeSlot,
}

/// Routes one watch. `auto` takes a hardware slot only when this host delivers hardware data
/// watchpoints, the range fits one slot, and a slot is free; otherwise page protection.
pub fn route(input: &RouteInput) -> Result<Engine, RouteError> {
    let hw_ok = input.hw_unavailable.is_none() && input.fits_one_slot && input.slot_free;
    match input.choice {
        EngineChoice::Page => Ok(Engine::Page),
        EngineChoice::Auto if hw_ok => Ok(Engine::Hw),
        EngineChoice::Auto => Ok(Engine::Page),
        EngineChoice::Hw => match &input.hw_unavailable {
            Some(why) => Err(RouteError::HwUnavailable(why.clone())),
            None if !input.fits_one_slot => Err(RouteError::HwShape),
            None if !input.slot_free => Err(RouteError::NoFreeSlot),
            None => Ok(Engine::Hw),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(choice: EngineChoice, hw: bool, fits: bool, free: bool) -> RouteInput {
        RouteInput {
            choice,
            hw_unavailable: (!hw).then(|| "no hw watchpoints here".to_owned()),
            fits_one_slot: fits,
            slot_free: free,
        }
    }

    #[test]
    fn routing_table() {
        use EngineChoice::*;
        let cases = [
            // choice, host delivers hw, fits one slot, slot free => result
            (Auto, true, true, true, Ok(Engine::Hw)),
            (Auto, false, true, true, Ok(Engine::Page)),
            (Auto, true, false, true, Ok(Engine::Page)),
            (Auto, true, true, false, Ok(Engine::Page)),
            (Page, true, true, true, Ok(Engine::Page)),
            (Hw, true, true, true, Ok(Engine::Hw)),
            (
                Hw,
                false,
                true,
                true,
                Err(RouteError::HwUnavailable("no hw watchpoints here".into())),
            ),
            (Hw, true, false, true, Err(RouteError::HwShape)),
            (Hw, true, true, false, Err(RouteError::NoFreeSlot)),
        ];
        for (choice, hw, fits, free, want) in cases {
            assert_eq!(
                route(&input(choice, hw, fits, free)),
                want,
                "{choice:?} {hw} {fits} {free}"
            );
        }
    }

    #[test]
    fn refusal_names_the_probes_reason() {
        let err = route(&input(EngineChoice::Hw, false, true, true)).unwrap_err();
        assert!(err.to_string().contains("no hw watchpoints here"));
    }
}
