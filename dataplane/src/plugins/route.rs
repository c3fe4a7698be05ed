//! Which object stores a stack's objects go to. `http_capture.object_store`
//! names one store by id, resolved once to its index among the running object
//! stores (config order): routing an object costs an index, never a string
//! compare. Without `object_store`, every object store receives the objects.

use std::sync::Arc;

use tapwire_store::ObjectStore;

use super::{HttpPlan, StackPlan};

/// The one object store a stack's objects go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRoute {
    /// The store's id, as written.
    pub id: String,
    /// Its index among the running object stores.
    pub index: usize,
}

impl StoreRoute {
    /// Finds store `id` among `stores` (the ids of `services.object_stores`,
    /// in order); the error says what the ids are.
    pub fn resolve(id: &str, stores: &[&str]) -> Result<Self, String> {
        match stores.iter().position(|s| *s == id) {
            Some(index) => Ok(Self {
                id: id.to_owned(),
                index,
            }),
            None => Err(crate::config::unknown_id(
                "object store",
                id,
                stores,
                "services.object_stores",
            )),
        }
    }
}

impl StackPlan {
    /// The object stores this stack's objects go to, out of `all` (the running
    /// ones, in config order).
    pub fn object_stores<'a>(&self, all: &'a [Arc<dyn ObjectStore>]) -> &'a [Arc<dyn ObjectStore>] {
        match &self.capture.store {
            None => all,
            Some(route) => all.get(route.index..=route.index).unwrap_or(&[]),
        }
    }
}

/// A running stack names an object store that a reload would remove.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "object store `{store}` is named by `http_capture.object_store` of the running stack \
     `{stack}`; stacks change only at restart, so a reload cannot remove that store"
)]
pub struct StoreStillNamed {
    /// The store's id.
    pub store: String,
    /// The stack naming it.
    pub stack: String,
}

impl HttpPlan {
    fn stacks_mut(&mut self) -> impl Iterator<Item = &mut StackPlan> {
        std::iter::once(&mut self.default).chain(self.endpoints.iter_mut().map(|(_, s)| s))
    }

    /// Points every stack's `object_store` at its index among `stores` (the
    /// running object stores' ids, in order), as after a reload changed the
    /// store list. Changes nothing when a named store is missing.
    pub fn route_stores(&mut self, stores: &[&str]) -> Result<(), StoreStillNamed> {
        let mut routes = Vec::new();
        for stack in self.stacks_mut() {
            if let Some(route) = &stack.capture.store {
                let index =
                    stores
                        .iter()
                        .position(|s| *s == route.id)
                        .ok_or_else(|| StoreStillNamed {
                            store: route.id.clone(),
                            stack: stack.name.clone().unwrap_or_default(),
                        })?;
                routes.push(index);
            }
        }
        let mut routes = routes.into_iter();
        for stack in self.stacks_mut() {
            if let Some(route) = &mut stack.capture.store
                && let Some(index) = routes.next()
            {
                route.index = index;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::Level;

    fn routed(id: &str, index: usize) -> StackPlan {
        let mut stack = StackPlan::NONE;
        stack.name = Some(format!("to_{id}"));
        stack.capture.level = Level::Full;
        stack.capture.store = Some(StoreRoute {
            id: id.to_owned(),
            index,
        });
        stack
    }

    #[test]
    fn unknown_ids_are_refused_with_the_ids_there_are() {
        assert_eq!(
            StoreRoute::resolve("b", &["a", "b"]),
            Ok(StoreRoute {
                id: "b".into(),
                index: 1
            })
        );
        assert_eq!(
            StoreRoute::resolve("c", &["a", "b"]).unwrap_err(),
            "unknown object store `c`, expected one of `a`, `b`"
        );
        assert_eq!(
            StoreRoute::resolve("c", &[]).unwrap_err(),
            "unknown object store `c`: `services.object_stores` is empty"
        );
    }

    #[test]
    fn a_reload_moves_indexes_or_refuses_to_drop_a_named_store() {
        let mut plan = HttpPlan {
            default: routed("a", 0),
            endpoints: vec![("api.example.com".into(), routed("b", 1))],
        };
        plan.route_stores(&["new", "b", "a"]).unwrap();
        let index = |s: &StackPlan| s.capture.store.as_ref().unwrap().index;
        assert_eq!((index(&plan.default), index(&plan.endpoints[0].1)), (2, 1));
        assert_eq!(
            plan.route_stores(&["a"]),
            Err(StoreStillNamed {
                store: "b".into(),
                stack: "to_b".into()
            })
        );
        assert_eq!(index(&plan.default), 2, "unchanged after a refusal");
    }
}
