"""A PyTorch training loop fed by tfeed (the seed's examples/pytorch/mnist.py).

tfeed does the downloading, decoding and augmentation in tf.data; PyTorch sees
plain numpy batches turned into tensors.  Needs ``pip install torch``.

    python examples/pytorch_mnist.py --demo             # digits served on 127.0.0.1, no network
    python examples/pytorch_mnist.py urls.csv --epochs 5  # your own (url, label) list of digit images

The last stdout line is a JSON summary (images seen, final accuracies).
"""

import argparse
import json
import sys

import numpy as np

try:
    import torch
except ImportError:
    sys.exit("this example needs PyTorch: pip install torch")

import tfeed

SIZE = 28


def demo_server(n=1797):
    """An ImageServer of scikit-learn's handwritten digits (upscaled to 28 x 28), labelled 0-9."""
    import cv2

    from tfeed.testing import ImageServer, digits, encode

    images, labels = digits()
    images, labels = images[:n], labels[:n]
    files = {f"{label}/{i:04d}.png": encode(cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR), "png")
             for i, (image, label) in enumerate(zip(images, labels))}
    return ImageServer(files, latency=0.02, jitter=0.01)


def augmentation():
    try:
        from tfeed.augment import mnist_train
    except ImportError:
        return None
    return mnist_train(SIZE)


def torch_batches(dataset):
    """tfeed batches (float32 RGB 0-255, int32 labels) as torch tensors ([B, 1, 28, 28] in 0-1, int64)."""
    for images, labels in dataset.as_numpy_iterator():
        gray = images.mean(axis=-1, dtype=np.float32)[:, None] / 255.0
        yield torch.from_numpy(gray), torch.from_numpy(labels.astype(np.int64))


class Net(torch.nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 16, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
        self.classifier = torch.nn.Linear(32 * 5 * 5, classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def evaluate(model, dataset):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in torch_batches(dataset):
            correct += int((model(images).argmax(dim=1) == labels).sum())
            total += len(labels)
    return correct / max(total, 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Train a small PyTorch CNN on images fed by tfeed.")
    parser.add_argument("urls", nargs="?", help="(url, label) list of digit images")
    parser.add_argument("--demo", action="store_true", help="serve scikit-learn digits locally instead")
    parser.add_argument("--demo-images", type=int, default=1797, help="digits served by --demo (default all 1797)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    if bool(args.urls) == bool(args.demo):
        parser.error("give a URL list or --demo")

    server = demo_server(args.demo_images).start() if args.demo else None
    source = [(server.url(name), name.split("/")[0]) for name in server.names] if server else args.urls
    split = dict(image_size=(SIZE, SIZE), batch_size=args.batch_size, validation_split=0.2, seed=0)
    train = tfeed.image_dataset_from_urls(source, subset="training", augment=augmentation(), **split)
    val = tfeed.image_dataset_from_urls(source, subset="validation", **split)
    torch.manual_seed(0)
    model = Net(len(train.class_names))
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    seen = 0
    for epoch in range(args.epochs):
        model.train()
        losses = []
        for images, labels in torch_batches(train):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
            losses.append(float(loss))
            seen += len(labels)
        accuracy = evaluate(model, val)
        print(f"epoch {epoch + 1}: loss {np.mean(losses):.3f}, validation accuracy {accuracy:.3f}", flush=True)
    stats = train.stats.snapshot()
    print(json.dumps({"images_seen": seen, "val_accuracy": accuracy, "classes": train.class_names,
                      "failed": stats["failed"]}))
    if server is not None:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
