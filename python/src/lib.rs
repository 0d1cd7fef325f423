//! Python bindings of `mcr2`: the coding rates and the rate reduction with their gradients,
//! `RateStats` (picklable, for distributed sums), the CRATE classifier, its training loop and
//! block, ReduNet, ALC, MICL, the nearest-subspace classifier, the mixture-of-subspaces
//! generator and the built-in digits. NumPy arrays of float32 or float64 in and out, any memory layout without
//! a copy; the GIL is released while the crate computes.

mod convert;
mod crate_model;
mod models;
mod rate;
mod stats;
mod train;

use pyo3::prelude::*;

/// The compiled part of the `mcr2` package (re-exported by `mcr2/__init__.py`).
#[pymodule]
fn _mcr2(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("Mcr2Error", m.py().get_type::<convert::Mcr2Error>())?;
    m.add_function(wrap_pyfunction!(rate::coding_rate, m)?)?;
    m.add_function(wrap_pyfunction!(rate::coding_rate_with_grad, m)?)?;
    m.add_function(wrap_pyfunction!(rate::class_coding_rate, m)?)?;
    m.add_function(wrap_pyfunction!(rate::class_coding_rate_with_grad, m)?)?;
    m.add_function(wrap_pyfunction!(
        rate::class_coding_rate_grad_membership,
        m
    )?)?;
    m.add_function(wrap_pyfunction!(rate::rate_reduction, m)?)?;
    m.add_function(wrap_pyfunction!(rate::rate_reduction_with_grad, m)?)?;
    m.add_class::<rate::RateReduction>()?;
    m.add_class::<rate::ReferenceLoss>()?;
    m.add_class::<rate::ReferenceLossValue>()?;
    m.add_class::<stats::RateStats>()?;
    m.add_class::<crate_model::CrateConfig>()?;
    m.add_class::<crate_model::CrateClassifier>()?;
    m.add_class::<crate_model::CrateBlock>()?;
    m.add_function(wrap_pyfunction!(train::train_classifier, m)?)?;
    m.add_class::<models::ReduNet>()?;
    m.add_class::<models::NearestSubspace>()?;
    m.add_class::<models::Micl>()?;
    m.add_function(wrap_pyfunction!(models::alc, m)?)?;
    m.add_function(wrap_pyfunction!(models::mixture_of_subspaces, m)?)?;
    m.add_function(wrap_pyfunction!(models::digits, m)?)?;
    Ok(())
}
