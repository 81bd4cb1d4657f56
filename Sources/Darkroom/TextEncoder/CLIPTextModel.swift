import Foundation

/// `text_encoder/config.json` (transformers' CLIPTextConfig).
public struct CLIPTextConfig: Sendable {
    public var vocabSize: Int
    public var hiddenSize: Int
    public var intermediateSize: Int
    public var numHiddenLayers: Int
    public var numAttentionHeads: Int
    public var maxPositionEmbeddings: Int
    public var hiddenAct: Activation
    public var layerNormEps: Float

    public init(_ c: ConfigFile) throws {
        vocabSize = try c.int("vocab_size", default: 49408, range: 1...(1 << 22))
        hiddenSize = try c.int("hidden_size", default: 512, range: 1...65536)
        intermediateSize = try c.int("intermediate_size", default: 2048, range: 1...262144)
        numHiddenLayers = try c.int("num_hidden_layers", default: 12, range: 1...256)
        numAttentionHeads = try c.int("num_attention_heads", default: 8, range: 1...1024)
        maxPositionEmbeddings = try c.int("max_position_embeddings", default: 77, range: 1...65536)
        layerNormEps = Float(try c.double("layer_norm_eps", default: 1e-5))
        switch try c.string("hidden_act", default: "quick_gelu") {
        case "quick_gelu": hiddenAct = .quickGelu
        case "gelu": hiddenAct = .gelu
        case "gelu_new", "gelu_pytorch_tanh": hiddenAct = .geluTanh
        case let other: throw DarkroomError.unsupported(path: c.path, key: "hidden_act", value: "\"\(other)\"")
        }
        guard hiddenSize % numAttentionHeads == 0 else {
            throw DarkroomError.invalidConfig(path: c.path, key: "num_attention_heads", reason: "hidden_size \(hiddenSize) is not divisible by \(numAttentionHeads) heads")
        }
        // Nested configs (a full CLIPConfig) carry the text part under text_config.
        if c.value("text_config") != nil && c.value("hidden_size") == nil {
            throw DarkroomError.unsupported(path: c.path, key: "text_config", value: "a full CLIPConfig (expected a CLIPTextConfig)")
        }
    }
}

/// transformers' CLIPTextModel: token + position embeddings, pre-LN transformer layers with causal
/// self-attention, final LayerNorm.
public struct CLIPTextModel: Sendable {
    struct Layer: Sendable {
        let layerNorm1: LayerNorm
        let selfAttn: MultiHeadAttention
        let layerNorm2: LayerNorm
        let fc1: Linear
        let fc2: Linear
        let act: Activation

        func callAsFunction(_ x: Tensor) -> Tensor {
            let h = selfAttn(layerNorm1(x), causal: true)
            h.addInPlace(x)
            var m = fc1(layerNorm2(h))
            activate(m.data, count: m.count, act)
            m = fc2(m)
            m.addInPlace(h)
            return m
        }
    }

    public let config: CLIPTextConfig
    let tokenEmbedding: Tensor
    let positionEmbedding: Tensor
    let layers: [Layer]
    let finalLayerNorm: LayerNorm

    /// Binds weights named as transformers saves them; with or without the `text_model.` prefix
    /// (real SD folders have it, transformers 5 writes CLIPTextModel without it).
    public init(config: CLIPTextConfig, weights: Weights) throws {
        self.config = config
        let root = weights.has("text_model.embeddings.token_embedding.weight") ? weights.scope("text_model") : weights.scope("")
        let h = config.hiddenSize
        tokenEmbedding = try root["embeddings.token_embedding"].tensor("weight", [config.vocabSize, h])
        positionEmbedding = try root["embeddings.position_embedding"].tensor("weight", [config.maxPositionEmbeddings, h])
        weights.ignore { $0.hasSuffix("embeddings.position_ids") || $0.hasPrefix("text_projection") || $0 == "logit_scale" }
        var layers: [Layer] = []
        for i in 0..<config.numHiddenLayers {
            let l = root["encoder.layers.\(i)"]
            let a = l["self_attn"]
            layers.append(Layer(
                layerNorm1: try LayerNorm(l["layer_norm1"], dim: h, eps: config.layerNormEps),
                selfAttn: MultiHeadAttention(
                    q: try Linear(a["q_proj"], in: h, out: h), k: try Linear(a["k_proj"], in: h, out: h),
                    v: try Linear(a["v_proj"], in: h, out: h), out: try Linear(a["out_proj"], in: h, out: h),
                    heads: config.numAttentionHeads),
                layerNorm2: try LayerNorm(l["layer_norm2"], dim: h, eps: config.layerNormEps),
                fc1: try Linear(l["mlp.fc1"], in: h, out: config.intermediateSize),
                fc2: try Linear(l["mlp.fc2"], in: config.intermediateSize, out: h),
                act: config.hiddenAct))
        }
        self.layers = layers
        finalLayerNorm = try LayerNorm(root["final_layer_norm"], dim: h, eps: config.layerNormEps)
    }

    /// Hidden states of every layer for `ids` [batch][seq]: element 0 is the embeddings, element i
    /// the output of layer i (before the final LayerNorm), as transformers' `hidden_states`.
    public func hiddenStates(_ ids: [[Int]]) throws -> [Tensor] {
        let b = ids.count
        let s = ids.first?.count ?? 0
        let h = config.hiddenSize
        guard s <= config.maxPositionEmbeddings else {
            throw DarkroomError.invalidArgument("\(s) tokens exceed the text encoder's \(config.maxPositionEmbeddings) positions")
        }
        let x = Tensor(shape: [b, s, h])
        for (bi, row) in ids.enumerated() {
            precondition(row.count == s)
            for (i, id) in row.enumerated() {
                guard id >= 0 && id < config.vocabSize else {
                    throw DarkroomError.invalidArgument("token id \(id) is outside the vocabulary of \(config.vocabSize)")
                }
                let dst = x.data + (bi * s + i) * h
                let te = tokenEmbedding.data + id * h, pe = positionEmbedding.data + i * h
                for j in 0..<h { dst[j] = te[j] + pe[j] }
            }
        }
        var states = [x]
        var cur = x
        for layer in layers {
            cur = layer(cur)
            states.append(cur)
        }
        return states
    }

    /// `last_hidden_state` [batch, seq, hidden]: the final LayerNorm over the last layer's output.
    /// `skipLayers` > 0 takes the output `skipLayers` layers before the last (then the final
    /// LayerNorm), as diffusers' `clip_skip`.
    public func callAsFunction(_ ids: [[Int]], skipLayers: Int = 0) throws -> Tensor {
        let states = try hiddenStates(ids)
        let idx = states.count - 1 - max(0, min(skipLayers, layers.count - 1))
        return finalLayerNorm(states[idx])
    }
}
