"""QAT W4A4 (LSQ) of fmnist_resnet8 on Fashion-MNIST; convert, save, export to ONNX."""
import argparse

import quanta
from quanta import data, nn, optim, quant

parser = argparse.ArgumentParser()
for flag, default in [("epochs", 2), ("train_images", 60000), ("test_images", 10000)]:
    parser.add_argument("--" + flag, type=int, default=default)
parser.add_argument("--out", default="/tmp/fmnist_w4a4")
args = parser.parse_args()

train, test = data.fashion_mnist("train"), data.fashion_mnist("test")
train = data.ImageDataset(train.images[: args.train_images], train.labels[: args.train_images], 10)
test = data.ImageDataset(test.images[: args.test_images], test.labels[: args.test_images], 10)
T = data.transforms
normalize = T.Normalize([0.2860], [0.3530])
augment = T.Compose([T.ToTensor(), T.RandomCrop(28, padding=2), T.RandomHorizontalFlip(), normalize])
loader = data.DataLoader(train, augment, batch_size=128, seed=0, drop_last=True)

model = quanta.models.make("fmnist_resnet8", seed=0)
quant.prepare_qat(model, quant.Policy(4, 4, "lsq"))  # first and last layers stay 8-bit
opt = optim.SGD(quant.parameter_groups(model), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
schedule = optim.CosineWarmup(opt, warmup_steps=0, total_steps=args.epochs * len(loader))
for epoch in range(args.epochs):
    model.train()
    for x, y in loader:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(), loss.backward(), opt.step(), schedule.step()
    print(f"epoch {epoch + 1}: last loss {loss.item():.4f}")

model.eval()
integer_model = quant.convert(model)  # int4/int8 weights, integer kernels
right = 0
with quanta.no_grad():
    for x, y in data.DataLoader(test, T.Compose([T.ToTensor(), normalize]), batch_size=256, shuffle=False):
        right += (integer_model(x).argmax(dim=1) == y).to(quanta.i64).sum().item()
print(f"integer model: top-1 {100 * right / len(test):.2f}%, {integer_model.bytes()} bytes")
integer_model.save(args.out + ".safetensors")
quant.export_onnx(integer_model, args.out + ".onnx", [1, 1, 28, 28])
