"""The Open Inference Protocol v2 over gRPC: KServe's grpc_predict_v2.proto and its generated
modules, shared by the model server (which serves it) and anything that forwards it."""
