#include "core/device.hpp"

#include "core/error.hpp"

namespace gppf {

Device Device::parse(const std::string& name) {
  if (name == "host" || name == "cpu") return host();
  if (name == "cuda") return cuda(0);
  if (name.rfind("cuda:", 0) == 0) {
    const std::string idx = name.substr(5);
    GPPF_CHECK(!idx.empty() && idx.find_first_not_of("0123456789") == std::string::npos, "device '", name,
               "' is not host, cuda or cuda:N");
    return cuda(std::stoi(idx));
  }
  GPPF_THROW("device '", name, "' is not host, cuda or cuda:N");
}

}  // namespace gppf
