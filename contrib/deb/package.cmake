# The Debian package (cpack -G DEB, run by scripts/package.sh): one package
# with the binaries, units, service user, example configurations, man pages,
# docs and the client library.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME keycast)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "keycast maintainers <maintainers@keycast.invalid>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "enciphered multicast at line rate, and its key server")
# CPack puts the summary on the Description line, this text under it.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "DPDK poll-mode senders encipher datagrams with AES-GCM (Intel IPsec-MB) and
multicast them as standard ESP; receivers decipher them through a lock-free
key table. keycast-keyd, a TLS 1.3 key server, makes, hands out, rotates and
replicates the keys and bills clients; keycast-ctl administers it. Includes
systemd units, the key-plane client library and its pkg-config file.")
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
# Depends from the binaries' shared libraries (dpkg-shlibdeps). DPDK's
# drivers are plugins it loads at run time, which no ELF header names: hence
# the recommendation of the package that carries them.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS dpdk)
# /etc/keycast is an absolute destination: install through DESTDIR so it
# lands in the package, not on the building machine.
set(CPACK_SET_DESTDIR ON)
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
  ${CMAKE_CURRENT_LIST_DIR}/conffiles ${CMAKE_CURRENT_LIST_DIR}/postinst ${CMAKE_CURRENT_LIST_DIR}/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
include(CPack)
