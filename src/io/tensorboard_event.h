#pragma once
// TensorBoard's event-file format: Event protocol buffers (src/io/tensorboard_event.proto holds the fields fm
// writes) in TFRecord framing: length, masked CRC-32C of the length, data, masked CRC-32C of the data. Each function
// returns one whole record, ready to append to an events.out.tfevents.* file.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace fm::tensorboard_event {

// The record every event file starts with (the file version TensorBoard's reader expects).
std::string file_version(double wall_time);

// Every number in `metrics` but "step" as a scalar of that name, at step metrics["step"].
std::string scalars(const nlohmann::json& metrics, double wall_time);

// `png` (a whole PNG file's bytes) as image `tag` at `step`; `what` names the PNG in the error for bytes that are
// not a PNG.
std::string image(const std::string& tag, const std::string& png, int64_t step, double wall_time,
                  const std::string& what);

}  // namespace fm::tensorboard_event
