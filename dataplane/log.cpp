#include "dataplane/log.hpp"

RTE_LOG_REGISTER(kc_logtype_send, keycast.send, INFO);
RTE_LOG_REGISTER(kc_logtype_recv, keycast.recv, INFO);
RTE_LOG_REGISTER(kc_logtype_kms, keycast.kms, INFO);

int kc_logtype_app = RTE_LOGTYPE_USER1;
