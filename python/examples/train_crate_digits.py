"""Trains a small CRATE classifier on the built-in digits with cross-entropy, from Python:
the same model, data, schedule and seed as the Rust example `train_crate_digits`, so the two
print the same test accuracy.

    python python/examples/train_crate_digits.py [--epochs N] [--seed S] [--quick]
"""

import argparse
import time

import numpy as np

import mcr2

SHIFTS = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)]


def digit_split():
    """Every fourth image (i % 4 == 3) held out; 1-channel 8 × 8 images in [0, 1]."""
    pixels, labels = mcr2.digits()
    images = (pixels / 16.0).reshape(-1, 1, 8, 8).astype(np.float32)
    test = np.arange(len(labels)) % 4 == 3
    return images[~test], labels[~test], images[test], labels[test]


def with_shifts(images, labels):
    """The images and their copies shifted by one pixel down, up, right and left (zeros
    shifted in), the labels repeated: five times the training set."""
    out = []
    for dy, dx in SHIFTS:
        shifted = np.zeros_like(images)
        rows = slice(max(dy, 0), 8 + min(dy, 0))
        cols = slice(max(dx, 0), 8 + min(dx, 0))
        src_rows = slice(max(-dy, 0), 8 + min(-dy, 0))
        src_cols = slice(max(-dx, 0), 8 + min(-dx, 0))
        shifted[:, :, rows, cols] = images[:, :, src_rows, src_cols]
        out.append(shifted)
    return np.concatenate(out), np.tile(labels, len(SHIFTS))


def run(epochs, seed, verbose=True):
    xtr, ytr, xte, yte = digit_split()
    xtr, ytr = with_shifts(xtr, ytr)
    # 8 × 8 images in 4 × 4 patches, width 64 in 4 heads of 16, depth 3 (the Rust example's)
    config = mcr2.CrateConfig(8, 4, 10, 64, 3, 4, 16, channels=1)
    model = mcr2.CrateClassifier(config, seed=seed)
    batch_size = 32
    steps = epochs * -(-len(ytr) // batch_size)

    def report(record):
        if verbose:
            print(f"epoch {record['epoch'] + 1:3}  loss {record['loss']:.4f}  "
                  f"test accuracy {100 * record['test_accuracy']:.1f}%")

    started = time.perf_counter()
    trained, history = mcr2.train_classifier(
        model, xtr, ytr, epochs=epochs, batch_size=batch_size, lr=2e-3, min_lr=1e-5,
        warmup_steps=steps // 20, clip_norm=1.0, label_smoothing=0.1, seed=seed,
        test_images=xte, test_labels=yte, callback=report,
    )
    seconds = time.perf_counter() - started
    return trained, history, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="passes over the training images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initialization and shuffling")
    parser.add_argument("--quick", action="store_true", help="one epoch (CI)")
    args = parser.parse_args()
    epochs = 1 if args.quick else args.epochs
    print(f"digits: CRATE with {mcr2.CrateConfig(8, 4, 10, 64, 3, 4, 16, channels=1).parameter_count()} "
          f"parameters; {epochs} epochs of batches of 32, seed {args.seed}")
    _, history, seconds = run(epochs, args.seed)
    print(f"training took {seconds:.1f} s")
    print(f"test accuracy: {100 * history[-1]['test_accuracy']:.1f}%")


if __name__ == "__main__":
    main()
