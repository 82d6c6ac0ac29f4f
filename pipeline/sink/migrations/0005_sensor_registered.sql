-- Whether a sensor-minute row comes from a device in the sensor registry (docs/cases.md §6.1): the ops board
-- lists the devices that report without being registered (`registered = 0`). Rows written before this column
-- existed read 1: the worker did not tell unregistered devices apart then.
-- On a cluster the Distributed table (`${ref:...}`) gets the column too; on one server that is the same table,
-- which then has it already.
ALTER TABLE ${table:sensor_readings} ${on_cluster} ADD COLUMN IF NOT EXISTS registered UInt8 DEFAULT 1;

ALTER TABLE ${ref:sensor_readings} ${on_cluster} ADD COLUMN IF NOT EXISTS registered UInt8 DEFAULT 1;
