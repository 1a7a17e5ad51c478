// quanta.data: the dataset readers, transforms and the DataLoader, iterable
// from Python (batches are made by C++ worker threads; the GIL is released
// while the iterator waits for one).
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/loader.h"
#include "data/readers.h"
#include "data/transforms.h"
#include "data/wordpiece.h"
#include "python/src/common.h"

namespace quanta::python {
namespace {

data::Split SplitOf(const std::string& split) {
  if (split == "train") return data::Split::kTrain;
  if (split == "test") return data::Split::kTest;
  throw Error("data: split '" + split + "' is not train or test");
}

// One epoch's batches; the loader outlives it (keep_alive in the binding).
class EpochIterator {
 public:
  EpochIterator(const data::DataLoader& loader, uint64_t epoch) : epoch_(loader.Start(epoch)) {}
  py::tuple Next() {
    data::Batch b;
    bool more;
    {
      py::gil_scoped_release release;
      more = epoch_ && epoch_->Next(&b);
    }
    if (!more) {
      epoch_.reset();  // stops the workers
      throw py::stop_iteration();
    }
    return py::make_tuple(b.data, b.labels);
  }

 private:
  std::unique_ptr<data::DataLoader::Epoch> epoch_;
};

// A DataLoader that counts epochs as PyTorch users iterate it: each `for`
// over it is the next epoch (its own shuffle order, drawn from seed and epoch).
struct PyLoader {
  std::shared_ptr<data::DataLoader> loader;
  uint64_t next_epoch = 0;
};

}  // namespace

void BindData(py::module_& m) {
  py::module_ d = m.def_submodule("data", "Datasets, transforms, DataLoader");
  py::class_<data::Dataset, std::shared_ptr<data::Dataset>>(d, "Dataset")
      .def("__len__", &data::Dataset::size)
      .def("__getitem__", [](const data::Dataset& ds, int64_t i) {
        QUANTA_CHECK(i >= -ds.size() && i < ds.size(), "Dataset: index ", i, " of ", ds.size(), " examples");
        data::Example e = ds.Get(i < 0 ? i + ds.size() : i);
        return py::make_tuple(e.image, e.label);
      });
  py::class_<data::ImageDataset, data::Dataset, std::shared_ptr<data::ImageDataset>>(d, "ImageDataset")
      .def(py::init<Tensor, std::vector<int64_t>, int64_t, std::vector<std::string>>(), py::arg("images"),
           py::arg("labels"), py::arg("num_classes"), py::arg("class_names") = std::vector<std::string>{},
           "images u8 (N, H, W, C); labels one per image in [0, num_classes)")
      .def_property_readonly("images", &data::ImageDataset::images)
      .def_property_readonly("labels", &data::ImageDataset::labels)
      .def_property_readonly("num_classes", &data::ImageDataset::num_classes)
      .def_property_readonly("class_names", &data::ImageDataset::class_names);
  d.attr("FASHION_MNIST_DIR") = data::kFashionMnistDir;
  d.def("fashion_mnist", [](const std::string& split, const std::string& dir) {
          return ValueOrRaise(data::ReadFashionMnist(SplitOf(split), dir));
        },
        py::arg("split") = "train", py::arg("root") = data::kFashionMnistDir,
        "Fashion-MNIST from Debian's dataset-fashion-mnist (IDX files, plain or gzip)");
  d.def("cifar", [](const std::string& root, int classes, const std::string& split) {
          QUANTA_CHECK(classes == 10 || classes == 100, "data.cifar: classes is 10 or 100, got ", classes);
          return ValueOrRaise(
              data::ReadCifar(root, classes == 10 ? data::CifarKind::k10 : data::CifarKind::k100, SplitOf(split)));
        },
        py::arg("root"), py::arg("classes") = 10, py::arg("split") = "train");
  d.def("image_folder", [](const std::string& root, int64_t height, int64_t width, int channels) {
          return ValueOrRaise(data::ReadImageFolder(root, height, width, channels));
        },
        py::arg("root"), py::arg("height"), py::arg("width"), py::arg("channels") = 3);

  py::class_<data::WordPieceTokenizer>(d, "WordPieceTokenizer", "BERT's tokenizer, as transformers' BertTokenizer")
      .def_static("load", [](const std::string& vocab, bool lower_case) {
                    return ValueOrRaise(data::WordPieceTokenizer::Load(vocab, lower_case));
                  },
                  py::arg("vocab_path"), py::arg("lower_case") = true)
      .def("tokenize", &data::WordPieceTokenizer::Tokenize, py::arg("text"))
      .def("encode", [](const data::WordPieceTokenizer& t, const std::vector<std::string>& texts, int64_t max_length) {
             data::BatchEncoding e = t.EncodeBatch(texts, max_length);
             py::dict out;
             out["input_ids"] = e.ids;
             out["token_type_ids"] = e.type_ids;
             out["attention_mask"] = e.attention_mask;
             return out;
           },
           py::arg("texts"), py::arg("max_length") = 128,
           "[CLS] text [SEP] padded to max_length: a dict of i64 (B, max_length) tensors, as transformers names them")
      .def("__len__", &data::WordPieceTokenizer::size);

  py::module_ tf = d.def_submodule("transforms", "Per-image transforms (u8 HWC in, f32 CHW out)");
  py::class_<data::Transform, std::shared_ptr<data::Transform>>(tf, "Transform");
  auto as_mutable = [](data::TransformPtr p) { return std::const_pointer_cast<data::Transform>(p); };
  tf.def("Compose", [=](std::vector<std::shared_ptr<data::Transform>> ts) {
    return as_mutable(data::Compose(std::vector<data::TransformPtr>(ts.begin(), ts.end())));
  }, py::arg("transforms"));
  tf.def("ToTensor", [=] { return as_mutable(data::ToTensor()); });
  tf.def("RandomCrop", [=](int64_t size, int64_t padding) { return as_mutable(data::RandomCrop(size, padding)); },
         py::arg("size"), py::arg("padding") = 0);
  tf.def("RandomHorizontalFlip", [=](double p) { return as_mutable(data::HorizontalFlip(p)); }, py::arg("p") = 0.5);
  tf.def("Normalize", [=](std::vector<float> mean, std::vector<float> std) {
    return as_mutable(data::Normalize(std::move(mean), std::move(std)));
  }, py::arg("mean"), py::arg("std"));
  tf.def("Cutout", [=](int64_t size) { return as_mutable(data::Cutout(size)); }, py::arg("size"));

  py::class_<EpochIterator>(d, "EpochIterator")
      .def("__iter__", [](py::object self) { return self; })
      .def("__next__", &EpochIterator::Next);
  py::class_<PyLoader>(d, "DataLoader")
      .def(py::init([](std::shared_ptr<data::Dataset> ds, std::shared_ptr<data::Transform> transform,
                       int64_t batch_size, bool shuffle, uint64_t seed, bool drop_last, int workers,
                       bool channels_last) {
             data::LoaderOptions o{.batch_size = batch_size, .shuffle = shuffle, .seed = seed, .drop_last = drop_last,
                                   .workers = workers, .channels_last = channels_last};
             return PyLoader{std::make_shared<data::DataLoader>(ds, transform, o)};
           }),
           py::arg("dataset"), py::arg("transform") = nullptr, py::arg("batch_size") = 128, py::arg("shuffle") = true,
           py::arg("seed") = 0, py::arg("drop_last") = false, py::arg("num_workers") = 2,
           py::arg("channels_last") = false,
           "Batches (data f32 (B, C, H, W), labels i64 (B)); each epoch a permutation drawn from (seed, epoch). "
           "channels_last: batches in channels-last memory, so the network runs channels-last on the CPU "
           "(faster; what //apps:train does by default)")
      .def("__len__", [](const PyLoader& l) { return l.loader->NumBatches(); })
      .def("__iter__", [](PyLoader& l) { return EpochIterator(*l.loader, l.next_epoch++); }, py::keep_alive<0, 1>())
      .def("epoch", [](PyLoader& l, uint64_t e) { return EpochIterator(*l.loader, e); }, py::arg("epoch"),
           py::keep_alive<0, 1>(), "The batches of epoch `epoch` (iterating the loader itself counts epochs)")
      .def("order", [](const PyLoader& l, uint64_t e) { return l.loader->Order(e); }, py::arg("epoch"));
}

}  // namespace quanta::python
