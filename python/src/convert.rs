//! From Python values to the crate's types: arrays of either float type, the precision,
//! labels and memberships; and the crate's errors as Python exceptions.

use mcr2::{Float, Labels, Membership, Precision};
use numpy::{Element, PyArray1, PyArray2, PyArray3, PyArray4, PyArrayMethods, PyReadonlyArray};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

pyo3::create_exception!(
    mcr2,
    Mcr2Error,
    PyValueError,
    "An error reported by the mcr2 crate (invalid input, a failed factorization, a malformed file)."
);

/// The crate's error as a Python exception carrying its message.
pub fn err(e: mcr2::Error) -> PyErr {
    Mcr2Error::new_err(e.to_string())
}

/// `Result<T, mcr2::Error>` to `PyResult<T>`.
pub trait OrPy<T> {
    /// The error as [`Mcr2Error`].
    fn py(self) -> PyResult<T>;
}

impl<T> OrPy<T> for mcr2::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(err)
    }
}

/// A value of either float type: arrays, models and statistics come in float32 and float64.
pub enum Typed<A, B> {
    /// float32
    F32(A),
    /// float64
    F64(B),
}

/// Runs the same (generic) code on whichever float type `$value` holds.
#[macro_export]
macro_rules! each {
    ($value:expr, $name:ident => $body:expr) => {
        match $value {
            $crate::convert::Typed::F32($name) => $body,
            $crate::convert::Typed::F64($name) => $body,
        }
    };
}

/// A read-only NumPy array of float32 or float64, any memory layout (no copy).
pub type AnyArray<'py, D> = Typed<PyReadonlyArray<'py, f32, D>, PyReadonlyArray<'py, f64, D>>;

/// What `obj` is, for an error message: `a float64 array of shape (3, 4)` or `list`.
fn describe(obj: &Bound<'_, PyAny>) -> String {
    let dtype = obj
        .getattr("dtype")
        .and_then(|d| d.str().map(|s| s.to_string()));
    let shape = obj
        .getattr("shape")
        .and_then(|s| s.str().map(|s| s.to_string()));
    match (dtype, shape) {
        (Ok(dtype), Ok(shape)) => format!("a {dtype} array of shape {shape}"),
        _ => obj
            .get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "an object".into()),
    }
}

fn wrong(name: &str, expected: &str, obj: &Bound<'_, PyAny>) -> PyErr {
    PyTypeError::new_err(format!(
        "{name}: expected {expected}, got {}",
        describe(obj)
    ))
}

/// The array `obj` as float32 or float64 without a copy, or a `TypeError` naming `name`.
pub fn array2<'py>(obj: &Bound<'py, PyAny>, name: &str) -> PyResult<AnyArray<'py, numpy::Ix2>> {
    let borrow = |e: numpy::BorrowError| PyValueError::new_err(format!("{name}: {e}"));
    if let Ok(a) = obj.cast::<PyArray2<f64>>() {
        return Ok(Typed::F64(a.try_readonly().map_err(borrow)?));
    }
    if let Ok(a) = obj.cast::<PyArray2<f32>>() {
        return Ok(Typed::F32(a.try_readonly().map_err(borrow)?));
    }
    Err(wrong(name, "a 2-D float32 or float64 NumPy array", obj))
}

macro_rules! typed_array {
    ($typed:ident, $array:ident, $dim:ty, $nd:literal) => {
        /// The array `obj` in the float type `T` without a copy, or a `TypeError` naming
        /// `name` and the type expected.
        pub fn $typed<'py, T: Float + Element>(
            obj: &Bound<'py, PyAny>,
            name: &str,
        ) -> PyResult<PyReadonlyArray<'py, T, $dim>> {
            match obj.cast::<$array<T>>() {
                Ok(a) => a
                    .try_readonly()
                    .map_err(|e| PyValueError::new_err(format!("{name}: {e}"))),
                Err(_) => Err(wrong(
                    name,
                    &format!(
                        concat!(
                            "a ",
                            $nd,
                            " {} NumPy array (the dtype of the model or of the other operands)"
                        ),
                        dtype_name::<T>()
                    ),
                    obj,
                )),
            }
        }
    };
}

typed_array!(typed2, PyArray2, numpy::Ix2, "2-D");
typed_array!(typed3, PyArray3, numpy::Ix3, "3-D");
typed_array!(typed4, PyArray4, numpy::Ix4, "4-D");

/// `"float32"` or `"float64"`.
pub fn dtype_name<T: Float>() -> &'static str {
    if std::mem::size_of::<T>() == 4 {
        "float32"
    } else {
        "float64"
    }
}

/// The `dtype=` argument of constructors: `"float32"`/`"float64"` or the NumPy dtypes.
pub fn is_f32(dtype: &Bound<'_, PyAny>) -> PyResult<bool> {
    let name = match dtype.extract::<String>() {
        Ok(s) => s,
        Err(_) => dtype
            .getattr("__name__")
            .or_else(|_| dtype.str().map(|s| s.into_any()))?
            .str()?
            .to_string(),
    };
    match name.as_str() {
        "float32" | "f4" | "<f4" => Ok(true),
        "float64" | "f8" | "<f8" | "float" => Ok(false),
        other => Err(PyValueError::new_err(format!(
            "dtype: expected float32 or float64, got {other}"
        ))),
    }
}

/// The precision from exactly one of `eps=` (ε) and `eps_sq=` (ε², the reference code's
/// `eps`).
pub fn precision(eps: Option<f64>, eps_sq: Option<f64>) -> PyResult<Precision> {
    match (eps, eps_sq) {
        (Some(e), None) => Precision::from_eps(e).py(),
        (None, Some(e2)) => Precision::from_eps_sq(e2).py(),
        _ => Err(PyValueError::new_err(
            "give exactly one of eps= (the distortion ε) and eps_sq= (ε²; the reference code's `eps` is ε²)",
        )),
    }
}

/// Class indices from a 1-D integer array or a sequence of integers, with an explicit class
/// count.
pub fn labels(obj: &Bound<'_, PyAny>, n_classes: usize) -> PyResult<Labels> {
    let ids: Vec<i64> = if let Ok(a) = obj.cast::<PyArray1<i64>>() {
        a.try_readonly()
            .map_err(|e| PyValueError::new_err(format!("labels: {e}")))?
            .as_array()
            .to_vec()
    } else {
        obj.extract::<Vec<i64>>()
            .map_err(|_| wrong("labels", "a 1-D array or sequence of integers", obj))?
    };
    let ids: Vec<usize> = ids
        .iter()
        .map(|&l| {
            usize::try_from(l).map_err(|_| {
                PyValueError::new_err(format!("labels: {l} is negative; labels are 0..n_classes"))
            })
        })
        .collect::<PyResult<_>>()?;
    Labels::new(&ids, n_classes).py()
}

/// Hard labels (with `n_classes`) or a soft membership Π (n × k, same float type as the
/// samples): exactly one.
pub fn membership<T: Float + Element>(
    labels_arg: Option<&Bound<'_, PyAny>>,
    n_classes: Option<usize>,
    membership_arg: Option<&Bound<'_, PyAny>>,
) -> PyResult<Membership<T>> {
    match (labels_arg, membership_arg) {
        (Some(l), None) => {
            let k = n_classes.ok_or_else(|| {
                PyValueError::new_err("hard labels need n_classes= (the number of classes)")
            })?;
            Ok(Membership::from(labels(l, k)?))
        }
        (None, Some(m)) => {
            if n_classes.is_some() {
                return Err(PyValueError::new_err(
                    "n_classes= goes with hard labels; a membership's class count is its number of columns",
                ));
            }
            let pi = typed2::<T>(m, "membership")?;
            Membership::soft(pi.as_array().to_owned()).py()
        }
        _ => Err(PyValueError::new_err(
            "give exactly one of labels (with n_classes=) and membership= (an n × k matrix)",
        )),
    }
}
