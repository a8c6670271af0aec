# Sourced by the image scripts: time stamps for reproducible file systems from
# SOURCE_DATE_EPOCH (which must be set).
#
#   FAT_TIME   FAT time stamps start in 1980: an earlier SOURCE_DATE_EPOCH (the
#              default 0) becomes 1980-01-01 (mtools would write 2098 otherwise).
#              Use with TZ=UTC: FAT stores local time.
#   FAKE_TIME  for E2FSPROGS_FAKE_TIME: mke2fs ignores 0 (and takes the current
#              time), so 0 becomes 1.
FAT_TIME=$((SOURCE_DATE_EPOCH > 315532800 ? SOURCE_DATE_EPOCH : 315532800))
FAKE_TIME=$((SOURCE_DATE_EPOCH > 0 ? SOURCE_DATE_EPOCH : 1))
