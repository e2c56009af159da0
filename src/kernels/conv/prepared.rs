//! Weights prepared for the kernels (packed for the shifted kernel, transformed for Winograd),
//! kept across calls while the weight cannot change: a parameter's value read on an inference
//! tape, or frozen, identified by the parameter's id and the version of its value
//! ([`crate::Param::version`], renewed by every write). Anything else is prepared per call, as
//! before.
//!
//! A single image's inference spent a fifth of its time preparing weights (ResNet-18 on two
//! threads of a Zen 4: packing 10.7%, Winograd's filter transform 9.7%), work that ONNX Runtime
//! does once when it loads a model. The results are the same bits either way: the cache only
//! skips recomputing identical buffers.

use std::any::Any;
use std::sync::{Arc, Mutex};

/// Which value of which parameter a weight is: the key of its prepared forms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct WeightIdentity {
    /// [`crate::ParamId::as_u64`].
    pub param: u64,
    /// [`crate::Param::version`].
    pub version: u64,
}

/// What was prepared from a weight, with the sizes beyond the weight's own that shape it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Form {
    /// The shifted kernel's packed forward weights, for this many groups.
    Shifted { groups: usize },
    /// The channel-blocked forward's packed weights (`blocked.rs`), for tiles of this many
    /// output channels (the layout depends on it; the length does not always).
    Blocked { tile_channels: usize },
    /// Winograd's forward filters, for output tiles of this side.
    Winograd { tile: usize },
}

struct Entry {
    identity: WeightIdentity,
    form: Form,
    bytes: usize,
    last_use: u64,
    value: Arc<dyn Any + Send + Sync>,
}

struct Cache {
    entries: Vec<Entry>,
    bytes: usize,
    /// Counts lookups: the least recently used entry has the smallest `last_use`.
    clock: u64,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    entries: Vec::new(),
    bytes: 0,
    clock: 0,
});

/// Bytes the cache keeps at most (ResNet-50's prepared convolutions take about 200 MB, VGG-16's
/// about 300 MB); past it, the least recently used forms go first.
const CAPACITY: usize = 512 << 20;

/// `prepare()`, or the value it gave before for the same weight and form. Without an identity
/// (a weight that may change between calls), always `prepare()`. `bytes` is the prepared
/// value's size, for the cache's bound.
pub(super) fn prepared<T: Send + Sync + 'static>(
    identity: Option<WeightIdentity>,
    form: Form,
    bytes: usize,
    prepare: impl FnOnce() -> T,
) -> Arc<T> {
    let Some(identity) = identity else {
        return Arc::new(prepare());
    };
    {
        let mut cache = CACHE
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.clock += 1;
        let now = cache.clock;
        let found = cache
            .entries
            .iter_mut()
            .find(|e| e.identity == identity && e.form == form);
        if let Some(entry) = found {
            entry.last_use = now;
            if let Ok(value) = Arc::clone(&entry.value).downcast::<T>() {
                return value;
            }
        }
    }
    // Prepared outside the lock (it runs on every thread); two callers racing on the same
    // weight each prepare it once, and the second keeps the first's.
    let value = Arc::new(prepare());
    if bytes > CAPACITY {
        return value;
    }
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // A newer value of this parameter makes its older forms garbage.
    let stale = |e: &Entry| e.identity.param == identity.param && e.identity != identity;
    let freed: usize = cache
        .entries
        .iter()
        .filter(|e| stale(e))
        .map(|e| e.bytes)
        .sum();
    cache.entries.retain(|e| !stale(e));
    cache.bytes -= freed;
    if cache
        .entries
        .iter()
        .any(|e| e.identity == identity && e.form == form)
    {
        return value;
    }
    while cache.bytes + bytes > CAPACITY {
        let oldest = (0..cache.entries.len())
            .min_by_key(|&i| cache.entries[i].last_use)
            .expect("entries hold the bytes counted");
        let evicted = cache.entries.swap_remove(oldest);
        cache.bytes -= evicted.bytes;
    }
    let last_use = cache.clock;
    cache.bytes += bytes;
    cache.entries.push(Entry {
        identity,
        form,
        bytes,
        last_use,
        value: Arc::clone(&value) as Arc<dyn Any + Send + Sync>,
    });
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_weight_is_prepared_once_per_version_and_form() {
        // Parameter ids far from those of other tests in this process.
        let first = WeightIdentity {
            param: u64::MAX - 1,
            version: 7,
        };
        let form = Form::Shifted { groups: 1 };
        let a = prepared(Some(first), form, 4, || vec![1.0f32]);
        let b = prepared(Some(first), form, 4, || vec![2.0f32]);
        assert_eq!((*a).clone(), vec![1.0], "cached");
        assert_eq!((*b).clone(), vec![1.0], "cached");
        let other_form = prepared(Some(first), Form::Winograd { tile: 2 }, 4, || vec![3.0f32]);
        assert_eq!(*other_form, vec![3.0], "another form of the same weight");
        let next = WeightIdentity {
            version: 8,
            ..first
        };
        assert_eq!(*prepared(Some(next), form, 4, || vec![4.0f32]), vec![4.0]);
        // The older version's forms were dropped with the newer's arrival.
        assert_eq!(*prepared(Some(first), form, 4, || vec![5.0f32]), vec![5.0]);
        assert_eq!(
            *prepared(None, form, 4, || vec![6.0f32]),
            vec![6.0],
            "never cached"
        );
    }
}
