// The README's embedding example, built so that it cannot rot.
// Run: bazel run //apps:embed_example
#include <iostream>

#include "core/ops.h"

using namespace quanta;

int main() {
  Generator gen(42);
  Tensor x = Uniform({64, 128}, -1, 1, &gen);           // f32 on the CPU
  Tensor w = Normal({128, 10}, 0, 0.1, &gen);
  Tensor logits = Add(Matmul(x, w), Zeros({10}));         // broadcasting
  Tensor p = Softmax(logits, -1);
  std::cout << Argmax(p, 1).Narrow(0, 0, 8) << "\n";
  Tensor h = x.To(DType::kBF16);                          // round to nearest even
  Tensor q = Tensor::FromQuantized({-8, 7, 3}, {3}, DType::kQInt4,
                                   QuantParams::PerTensor(0.1, 0));  // 2 bytes
  std::cout << q << " in " << q.storage()->bytes() << " bytes; " << h.Describe() << "\n";
  try {
    Add(x, Zeros({3}));
  } catch (const Error& e) {
    std::cerr << e.what() << "\n";  // add: shapes [64, 128] and [3] do not broadcast (...)
  }
}
