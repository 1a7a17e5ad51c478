// The recorder core calls after each op, and the backward pass: one topological
// sweep (Kahn's algorithm, newest node first), gradient buffers per node output,
// leaves accumulated at the end.
#include <algorithm>
#include <atomic>
#include <map>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "autograd/autograd.h"
#include "core/error.h"
#include "core/ops.h"

namespace quanta {
namespace {

std::atomic<uint64_t> next_sequence{0};

void RecordNode(Op op, std::span<const Tensor> inputs, std::span<Tensor> outputs, const OpAttrs& attrs) {
  if (!internal::IsDifferentiable(op)) return;
  auto node = std::make_shared<GradNode>();
  node->op = op;
  node->attrs = attrs;
  node->sequence = next_sequence++;
  for (const Tensor& t : inputs) {
    node->inputs.push_back(t.defined() ? t.Detach() : t);
    node->input_meta.push_back(t.defined() && t.requires_grad() ? t.autograd_meta() : nullptr);
  }
  for (size_t j = 0; j < outputs.size(); ++j) {
    Tensor& out = outputs[j];
    node->outputs.push_back(out.Detach());
    if (!IsFloating(out.dtype())) {
      node->output_meta.emplace_back();
      continue;
    }
    auto meta = std::make_shared<AutogradMeta>();
    meta->requires_grad = true;
    meta->grad_fn = node;
    meta->output_index = static_cast<int>(j);
    node->output_meta.push_back(meta);
    out.SetAutogradMeta(std::move(meta));
  }
}

const bool recorder_installed = [] {
  SetRecorder(&RecordNode);
  return true;
}();

Tensor Accumulate(const Tensor& sum, const Tensor& g) { return sum.defined() ? Add(sum, g) : g; }

Tensor RunHooks(const AutogradMeta* meta, Tensor g) {
  if (meta == nullptr) return g;
  for (const auto& hook : meta->hooks) {
    Tensor replaced = hook(g);
    if (replaced.defined()) {
      QUANTA_CHECK(replaced.shape() == g.shape(), "hook: returned ", replaced.Describe(),
                   " for a gradient ", g.Describe());
      g = replaced;
    }
  }
  return g;
}

}  // namespace

void Backward(const Tensor& root, const Tensor& grad, bool retain_graph) {
  (void)recorder_installed;
  QUANTA_CHECK(root.requires_grad(), "backward: ", root.Describe(),
               " does not require grad (no input of the ops that made it does)");
  Tensor seed = grad;
  if (!seed.defined()) {
    QUANTA_CHECK(root.numel() == 1, "backward: ", root.Describe(),
                 " is not a scalar; pass the upstream gradient explicitly");
    seed = OnesLike(root.Detach());
  }
  QUANTA_CHECK(seed.shape() == root.shape(), "backward: gradient ", seed.Describe(),
               " does not match ", root.Describe());
  NoGradGuard no_grad;

  // Note [Leaves finish early]: a leaf's gradient is final once every edge into
  // it has been walked; its hooks run and grad() is written then, in the middle
  // of the pass, not after it. Data parallelism (dist/ddp.h) starts exchanging a
  // layer's gradients from that hook while backward goes on with earlier layers.
  std::unordered_map<AutogradMeta*, Tensor> leaf_sums;
  std::unordered_map<AutogradMeta*, int> leaf_edges;  // edges not yet walked
  auto finish_leaf = [&](const std::shared_ptr<AutogradMeta>& meta) {
    auto it = leaf_sums.find(meta.get());
    if (it == leaf_sums.end()) return;  // no edge brought a gradient
    Tensor g = RunHooks(meta.get(), it->second);
    leaf_sums.erase(it);
    // A fresh, contiguous gradient: g may be a broadcast view or alias a buffer.
    meta->grad = meta->grad.defined() ? Add(meta->grad, g) : g.Clone();
  };
  const std::shared_ptr<AutogradMeta>& root_meta = root.autograd_meta();
  if (root_meta->grad_fn == nullptr) {
    leaf_sums[root_meta.get()] = seed;
    finish_leaf(root_meta);
  } else {
    // Count, for every node reachable from the root, the edges that feed it.
    std::unordered_map<GradNode*, int> deps;
    std::vector<GradNode*> stack = {root_meta->grad_fn.get()};
    std::unordered_set<GradNode*> seen = {stack[0]};
    while (!stack.empty()) {
      GradNode* node = stack.back();
      stack.pop_back();
      QUANTA_CHECK(!node->released, "backward: the graph through ", OpName(node->op),
                   " was already freed by an earlier backward; pass retain_graph=true to the first");
      for (const auto& meta : node->input_meta) {
        if (meta && !meta->grad_fn) ++leaf_edges[meta.get()];
        if (!meta || !meta->grad_fn) continue;
        GradNode* next = meta->grad_fn.get();
        ++deps[next];
        if (seen.insert(next).second) stack.push_back(next);
      }
    }
    auto newest_first = [](GradNode* a, GradNode* b) { return a->sequence < b->sequence; };
    std::priority_queue<GradNode*, std::vector<GradNode*>, decltype(newest_first)> ready(newest_first);
    std::unordered_map<GradNode*, std::vector<Tensor>> buffers;
    GradNode* first = root_meta->grad_fn.get();
    buffers[first].resize(first->outputs.size());
    buffers[first][root_meta->output_index] = seed;
    ready.push(first);
    while (!ready.empty()) {
      GradNode* node = ready.top();
      ready.pop();
      std::vector<Tensor> grads = std::move(buffers[node]);
      buffers.erase(node);
      grads.resize(node->outputs.size());
      bool any = false;
      for (size_t j = 0; j < grads.size(); ++j) {
        if (!grads[j].defined()) continue;
        grads[j] = RunHooks(node->output_meta[j].lock().get(), grads[j]);
        any = true;
      }
      std::vector<Tensor> input_grads;
      if (any) input_grads = internal::FindBackwardRule(node->op)(*node, grads);
      input_grads.resize(node->inputs.size());
      for (size_t i = 0; i < node->inputs.size(); ++i) {
        const auto& meta = node->input_meta[i];
        if (!meta) continue;
        const Tensor& g = input_grads[i];
        if (g.defined()) {
          QUANTA_CHECK(g.shape() == node->inputs[i].shape(), "backward of ", OpName(node->op),
                       ": gradient ", g.Describe(), " for input ", node->inputs[i].Describe());
        }
        if (!meta->grad_fn) {
          if (g.defined()) leaf_sums[meta.get()] = Accumulate(leaf_sums[meta.get()], g);
          if (--leaf_edges[meta.get()] == 0) finish_leaf(meta);
          continue;
        }
        GradNode* next = meta->grad_fn.get();
        if (g.defined()) {
          std::vector<Tensor>& buf = buffers[next];
          buf.resize(next->outputs.size());
          buf[meta->output_index] = Accumulate(buf[meta->output_index], g);
        }
        if (--deps[next] == 0) ready.push(next);
      }
      if (!retain_graph) {
        node->released = true;
        node->inputs.clear();
        node->outputs.clear();
        node->inputs.resize(node->input_meta.size());
        node->outputs.resize(node->output_meta.size());
      }
    }
  }
  QUANTA_CHECK(leaf_sums.empty(), "backward: ", leaf_sums.size(), " leaf gradients were never finished");
}

void RegisterHook(Tensor& t, std::function<Tensor(const Tensor&)> hook) {
  QUANTA_CHECK(t.requires_grad(), "register_hook: ", t.Describe(), " does not require grad");
  t.autograd_meta()->hooks.push_back(std::move(hook));
}

}  // namespace quanta
