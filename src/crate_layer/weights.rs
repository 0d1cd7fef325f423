//! Weights by the reference state_dict names, in safetensors files.
//!
//! One block's tensors (relative to a prefix such as `transformer.layers.3.`):
//! `0.norm.weight`, `0.norm.bias` (dim), `0.fn.qkv.weight` (heads·dim_head × dim),
//! `0.fn.to_out.0.weight` (dim × heads·dim_head) and `0.fn.to_out.0.bias` (dim) unless
//! heads = 1 and dim_head = dim, `1.norm.weight`, `1.norm.bias` (dim), `1.fn.weight`
//! (dim × dim, the ISTA dictionary D). Tensors may be stored as F32 or F64 (converted to the
//! model's float type; BF16 and F16 too, converted exactly); any other dtype is an error.

use std::borrow::Cow;
use std::collections::HashMap;

use ndarray::{Array1, Array2, ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors, View};

use super::{
    CrateBlock, CrateBlockConfig, CrateEncoder, CrateEncoderConfig, Ista, LayerNorm, Mssa,
};
use crate::{Error, Float, Result};

pub(crate) fn invalid(name: &str, reason: impl Into<String>) -> Error {
    Error::InvalidWeights {
        name: name.to_string(),
        reason: reason.into(),
    }
}

pub(crate) fn parse(bytes: &[u8]) -> Result<SafeTensors<'_>> {
    SafeTensors::deserialize(bytes).map_err(|e| Error::MalformedFile(e.to_string()))
}

pub(crate) fn tensor<T: Float>(
    st: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
) -> Result<ArrayD<T>> {
    let t = st.tensor(name).map_err(|_| invalid(name, "missing"))?;
    if t.shape() != shape {
        return Err(invalid(
            name,
            format!("shape {:?}, expected {shape:?}", t.shape()),
        ));
    }
    let data = t.data();
    let values: Vec<T> = match t.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| T::from_f64(f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| {
                T::from_f64(f64::from_le_bytes([
                    b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
                ]))
            })
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| T::from_f64(bf16_to_f32(u16::from_le_bytes([b[0], b[1]])) as f64))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| T::from_f64(f16_to_f32(u16::from_le_bytes([b[0], b[1]])) as f64))
            .collect(),
        other => {
            return Err(invalid(
                name,
                format!("dtype {other:?}, expected F32, F64, BF16 or F16"),
            ));
        }
    };
    let a =
        ArrayD::from_shape_vec(IxDyn(shape), values).map_err(|e| invalid(name, e.to_string()))?;
    if let Some(pos) = a.iter().position(|v| !v.is_finite()) {
        return Err(invalid(
            name,
            format!("non-finite value at flat index {pos}"),
        ));
    }
    Ok(a)
}

/// bfloat16 → f32: the upper half of an f32 (exact).
pub(crate) fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// IEEE 754 binary16 → f32 (exact): sign, 5 exponent bits (bias 15), 10 fraction bits.
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0f32 } else { 1.0 };
    let exp = i32::from((h >> 10) & 0x1f);
    let frac = f32::from(h & 0x3ff);
    match exp {
        // subnormal: frac · 2^-24
        0 => sign * frac * (2.0f32).powi(-24),
        0x1f if frac == 0.0 => sign * f32::INFINITY,
        0x1f => f32::NAN,
        _ => sign * (1.0 + frac / 1024.0) * (2.0f32).powi(exp - 15),
    }
}

/// A tensor stored with shape `stored` (e.g. `[1, 1, dim]`) read as an array of shape `shape`
/// holding the same elements (e.g. `dim`).
pub(crate) fn reshaped<T: Float, Sh: ndarray::IntoDimension>(
    st: &SafeTensors<'_>,
    name: &str,
    stored: &[usize],
    shape: Sh,
) -> Result<ndarray::Array<T, Sh::Dim>> {
    tensor::<T>(st, name, stored)?
        .into_shape_with_order(shape.into_dimension())
        .map_err(|e| invalid(name, e.to_string()))
}

pub(crate) fn vector<T: Float>(st: &SafeTensors<'_>, name: &str, n: usize) -> Result<Array1<T>> {
    Ok(tensor(st, name, &[n])?.into_dimensionality().expect("1-D"))
}

pub(crate) fn matrix<T: Float>(
    st: &SafeTensors<'_>,
    name: &str,
    r: usize,
    c: usize,
) -> Result<Array2<T>> {
    Ok(tensor(st, name, &[r, c])?
        .into_dimensionality()
        .expect("2-D"))
}

/// The tensor names of one block (relative to its prefix).
pub(crate) fn block_names(c: &CrateBlockConfig) -> Vec<&'static str> {
    let mut names = vec!["0.norm.weight", "0.norm.bias", "0.fn.qkv.weight"];
    if c.project_out() {
        names.extend(["0.fn.to_out.0.weight", "0.fn.to_out.0.bias"]);
    }
    names.extend(["1.norm.weight", "1.norm.bias", "1.fn.weight"]);
    names
}

pub(crate) fn block_from<T: Float>(
    st: &SafeTensors<'_>,
    c: &CrateBlockConfig,
    prefix: &str,
) -> Result<CrateBlock<T>> {
    c.check()?;
    let (dim, inner) = (c.dim, c.heads * c.dim_head);
    let n = |s: &str| format!("{prefix}{s}");
    let ln1 = LayerNorm::from_parts(
        vector(st, &n("0.norm.weight"), dim)?,
        vector(st, &n("0.norm.bias"), dim)?,
        c.ln_eps,
    )?;
    let qkv = matrix(st, &n("0.fn.qkv.weight"), inner, dim)?;
    let to_out = if c.project_out() {
        Some((
            matrix(st, &n("0.fn.to_out.0.weight"), dim, inner)?,
            vector(st, &n("0.fn.to_out.0.bias"), dim)?,
        ))
    } else {
        None
    };
    let mssa = Mssa::from_weights(qkv, c.heads, to_out)?;
    let ln2 = LayerNorm::from_parts(
        vector(st, &n("1.norm.weight"), dim)?,
        vector(st, &n("1.norm.bias"), dim)?,
        c.ln_eps,
    )?;
    let ista = Ista::from_dictionary(
        matrix(st, &n("1.fn.weight"), dim, dim)?,
        c.ista_step,
        c.ista_lambda,
    )?;
    CrateBlock::from_parts(ln1, mssa, ln2, ista)
}

/// A tensor to write: the model's values in its own float type.
pub(crate) struct Out {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl View for &Out {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

pub(crate) fn out<'a, T: Float>(shape: &[usize], values: impl Iterator<Item = &'a T>) -> Out {
    let (dtype, bytes) = if T::NAME == "f32" {
        (
            Dtype::F32,
            values
                .flat_map(|v| (v.as_f64() as f32).to_le_bytes())
                .collect(),
        )
    } else {
        (
            Dtype::F64,
            values.flat_map(|v| v.as_f64().to_le_bytes()).collect(),
        )
    };
    Out {
        dtype,
        shape: shape.to_vec(),
        bytes,
    }
}

pub(crate) fn block_tensors<T: Float>(
    b: &CrateBlock<T>,
    prefix: &str,
    map: &mut HashMap<String, Out>,
) -> Result<()> {
    let (Some(ln1), Some(ln2)) = (&b.ln1, &b.ln2) else {
        return Err(Error::InvalidParameter {
            name: "block",
            value: "white-box".into(),
            reason: "a white-box block has no reference state_dict",
        });
    };
    if b.mssa.is_white_box() {
        return Err(Error::InvalidParameter {
            name: "block",
            value: "white-box attention".into(),
            reason: "a white-box block has no reference state_dict",
        });
    }
    let mut put = |name: &str, o: Out| {
        map.insert(format!("{prefix}{name}"), o);
    };
    put("0.norm.weight", out::<T>(&[ln1.dim()], ln1.weight.iter()));
    put("0.norm.bias", out::<T>(&[ln1.dim()], ln1.bias.iter()));
    put(
        "0.fn.qkv.weight",
        out::<T>(b.mssa.qkv.shape(), b.mssa.qkv.iter()),
    );
    if let Some((w, bias)) = b.mssa.to_out() {
        put("0.fn.to_out.0.weight", out::<T>(w.shape(), w.iter()));
        put("0.fn.to_out.0.bias", out::<T>(bias.shape(), bias.iter()));
    }
    put("1.norm.weight", out::<T>(&[ln2.dim()], ln2.weight.iter()));
    put("1.norm.bias", out::<T>(&[ln2.dim()], ln2.bias.iter()));
    let d = b.ista.dictionary();
    put("1.fn.weight", out::<T>(d.shape(), d.iter()));
    Ok(())
}

pub(crate) fn serialize(map: HashMap<String, Out>) -> Result<Vec<u8>> {
    safetensors::serialize(map.iter().map(|(k, v)| (k.clone(), v)), None)
        .map_err(|e| Error::MalformedFile(e.to_string()))
}

impl<T: Float> CrateBlock<T> {
    /// Loads a block from safetensors bytes, tensors named `{prefix}0.norm.weight`, … (see the
    /// module docs); `prefix` is `""` for a file holding one layer.
    pub fn from_safetensors(bytes: &[u8], config: &CrateBlockConfig, prefix: &str) -> Result<Self> {
        block_from(&parse(bytes)?, config, prefix)
    }

    /// Writes the block's weights (in its float type) as safetensors bytes.
    pub fn to_safetensors(&self, prefix: &str) -> Result<Vec<u8>> {
        let mut map = HashMap::new();
        block_tensors(self, prefix, &mut map)?;
        serialize(map)
    }

    /// This block's configuration.
    pub fn config(&self) -> CrateBlockConfig {
        CrateBlockConfig {
            dim: self.dim(),
            heads: self.mssa.heads,
            dim_head: self.mssa.dim_head,
            ista_step: self.ista.step_size(),
            ista_lambda: self.ista.lambda(),
            ln_eps: self.ln1.as_ref().map_or(1e-5, |l| l.eps),
        }
    }
}

impl<T: Float> CrateEncoder<T> {
    /// Loads `depth` layers named `{prefix}{l}.0.norm.weight`, … — with
    /// `prefix = "transformer.layers."` this reads the encoder of a reference CRATE checkpoint.
    pub fn from_safetensors(
        bytes: &[u8],
        config: &CrateEncoderConfig,
        prefix: &str,
    ) -> Result<Self> {
        config.check()?;
        let st = parse(bytes)?;
        let blocks = (0..config.depth)
            .map(|l| block_from(&st, &config.block, &format!("{prefix}{l}.")))
            .collect::<Result<Vec<_>>>()?;
        Self::from_blocks(blocks)
    }

    /// Writes every layer's weights as `{prefix}{l}.…`.
    pub fn to_safetensors(&self, prefix: &str) -> Result<Vec<u8>> {
        let mut map = HashMap::new();
        for (l, b) in self.blocks.iter().enumerate() {
            block_tensors(b, &format!("{prefix}{l}."), &mut map)?;
        }
        serialize(map)
    }
}

#[cfg(test)]
mod tests {
    use super::{bf16_to_f32, f16_to_f32};

    #[test]
    fn half_precision_conversions() {
        for (bits, want) in [
            (0x0000u16, 0.0f32),
            (0x3c00, 1.0),
            (0xc000, -2.0),
            (0x3555, 0.333_251_95),
            (0x7bff, 65504.0),
            (0x0400, 6.103_515_6e-5),
            (0x0001, 5.960_464_5e-8),
            (0x03ff, 6.097_555e-5),
            (0x7c00, f32::INFINITY),
            (0xfc00, f32::NEG_INFINITY),
        ] {
            assert_eq!(f16_to_f32(bits), want, "{bits:#06x}");
        }
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        for (bits, want) in [(0x3f80u16, 1.0f32), (0xc040, -3.0), (0x0000, 0.0)] {
            assert_eq!(bf16_to_f32(bits), want);
        }
        assert!(bf16_to_f32(0x7fc0).is_nan());
    }
}
