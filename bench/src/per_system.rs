//! One value per system, indexed by [`System`].

use std::ops::{Index, IndexMut};

use crate::systems::System;

/// A value for each system (a series of samples, a count), indexed by [`System`].
#[derive(Debug, Clone, Default)]
pub(crate) struct PerSystem<T>([T; System::COUNT]);

impl<T> Index<System> for PerSystem<T> {
    type Output = T;

    fn index(&self, system: System) -> &T {
        &self.0[system as usize]
    }
}

impl<T> IndexMut<System> for PerSystem<T> {
    fn index_mut(&mut self, system: System) -> &mut T {
        &mut self.0[system as usize]
    }
}

/// Samples per system, one per round.
pub(crate) type Samples = PerSystem<Vec<f64>>;
