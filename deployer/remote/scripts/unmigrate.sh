# Run the down-migration with release N's code; then its record is removed.
# Inputs: RELEASE, RECORD, and user.sh's.
cd "$RELEASE" || exit
as_user
rm -f "$RECORD"
