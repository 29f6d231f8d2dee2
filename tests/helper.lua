-- Loaded by busted before the specs (.busted `helper`).
-- `make test-gc` sets SCIM_TEST_GC=1: the collector then runs a full cycle at
-- every allocation step, so any C object that outlives its anchor shows up.
if os.getenv("SCIM_TEST_GC") then
  collectgarbage("incremental", 0, 100)  -- pause 0: a new cycle starts at once
end
