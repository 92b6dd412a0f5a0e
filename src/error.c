/* Error names and messages, generated from the one list in include/cgnet.h. */
#include "cgnet.h"

const char *cgnet_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
#define CGNET_ERR_MSG_(name, val, msg)                                                     \
  case (val):                                                                              \
    return msg;
    CGNET_ERRNO_MAP(CGNET_ERR_MSG_)
#undef CGNET_ERR_MSG_
  default:
    return "unknown error";
  }
}

const char *cgnet_err_name(int err) {
  switch (err) {
  case 0:
    return "CGNET_OK";
#define CGNET_ERR_NAME_(name, val, msg)                                                    \
  case (val):                                                                              \
    return "CGNET_" #name;
    CGNET_ERRNO_MAP(CGNET_ERR_NAME_)
#undef CGNET_ERR_NAME_
  default:
    return "CGNET_UNKNOWN";
  }
}
